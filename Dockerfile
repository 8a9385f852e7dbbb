# iotcore as a container image: `docker build -t iotcore .`, then `docker run -p 8080:8080 -p 1883:1883 iotcore`
# (embedded PostgreSQL in the /data volume) or with DATABASE_URL and AMQP_URL (compose.yaml runs the roles).
# test/deploy/dockerfile.test.ts runs these steps without Docker: keep to COPY, RUN, ENV, WORKDIR, USER.
ARG NODE_VERSION=22

# Build stage: every dependency (TypeScript included), then the compiled JavaScript.
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only, the compiled code, a non-root user.
FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production IOTCORE_DATA_DIR=/data
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
# The data dir (the local queue, the embedded PostgreSQL when DATABASE_URL is unset) belongs to the
# image's unprivileged user `node`; PostgreSQL refuses to run as root anyway.
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
# HTTP (REST API, HTTP ingest, MQTT over WebSocket at /mqtt, /readyz, /metrics) and MQTT over TCP.
EXPOSE 8080 1883
# /readyz is 200 only while every component of the process's roles is up (database, queue, ingest, listeners).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.IOTCORE_HTTP_PORT||process.env.PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["start"]
