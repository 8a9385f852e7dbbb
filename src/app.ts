import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import Fastify, { type FastifyInstance, LogController } from 'fastify'
import type { Logger } from 'pino'
import type { WebSocketServer } from 'ws'
import { api } from './api/index.js'
import { DeviceBody, ErrorBody, QuarantineItem } from './api/schemas.js'
import type { Config } from './config/index.js'
import { CredentialCache, Devices } from './devices/index.js'
import { IotError } from './errors.js'
import { httpIngest } from './gateway/http/index.js'
import { MqttGateway } from './gateway/mqtt/gateway.js'
import { Sessions } from './gateway/mqtt/sessions.js'
import { attachWebSocket } from './gateway/mqtt/websocket.js'
import { Ingest, metricsEvents } from './ingest/index.js'
import { IngestThread } from './ingest/thread.js'
import { type Metrics, createMetrics } from './metrics/index.js'
import { Heartbeat, Organizer } from './organizer/index.js'
import { createLogger } from './logger.js'
import { createQueue } from './queue/index.js'
import type { Queue } from './queue/types.js'
import { EmbeddedDatabase } from './store/embedded.js'
import { Store } from './store/index.js'

/** What a 503 (queue full or unreachable) tells clients to wait before retrying. */
const RETRY_AFTER_SECONDS = 5
/** How many times start tries an unreachable DATABASE_URL (about five minutes) before giving up. */
const START_DB_ATTEMPTS = 75
/** /readyz gives the database this long to answer before calling it down. */
const READY_PING_TIMEOUT_MS = 2000

/**
 * The admin token: from IOTCORE_ADMIN_TOKEN, else generated once and kept in the data dir. `show` stays true
 * until the token has been printed by a start that got through (see `markAdminTokenShown`).
 */
export function adminToken(config: Config): { token: string; show: boolean; file: string } {
  const file = join(config.dataDir, 'admin-token')
  if (config.adminToken) return { token: config.adminToken, show: false, file }
  if (!existsSync(file)) {
    mkdirSync(config.dataDir, { recursive: true })
    writeFileSync(file, 'adm_' + randomBytes(24).toString('base64url') + '\n', { mode: 0o600 })
  }
  return { token: readFileSync(file, 'utf8').trim(), show: !existsSync(file + '.shown'), file }
}

export function markAdminTokenShown(file: string): void {
  writeFileSync(file + '.shown', '')
}

/** Opens the database: the one at DATABASE_URL, or an embedded server in the data dir. */
export async function openStore(
  config: Config,
  log: Logger,
): Promise<{ store: Store; embedded?: EmbeddedDatabase }> {
  let url = config.databaseUrl
  let embedded: EmbeddedDatabase | undefined
  if (!url) {
    embedded = new EmbeddedDatabase(config.dataDir, log.child({ component: 'postgres' }))
    url = await embedded.start()
  }
  const store = new Store(url, log.child({ component: 'store' }), config.ingestConcurrency)
  // A database that is down at start is waited for: a process restarted during an outage comes up with it.
  for (let attempt = 1; ; attempt++) {
    try {
      await store.start()
      return { store, embedded }
    } catch (err) {
      const code = (err as { code?: string }).code
      const outage = !code || /^(08|57P0[13]|53)/.test(code) || code.startsWith('E')
      if (!outage || embedded || attempt >= START_DB_ATTEMPTS) {
        await store.stop().catch(() => {})
        await embedded?.stop()
        throw err
      }
      if (attempt === 1) log.warn({ err: (err as Error).message }, 'waiting for PostgreSQL')
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)))
    }
  }
}

/**
 * The one place that wires the platform: which parts run depends on the roles. Data flows one way: gateways
 * -> queue -> ingest -> store; the API reads the store.
 */
export class App {
  readonly log: Logger
  readonly metrics: Metrics
  store!: Store
  queue!: Queue
  credentials: CredentialCache | undefined
  mqtt: MqttGateway | undefined
  ingest: Ingest | IngestThread | undefined
  heartbeat: Heartbeat | undefined
  organizer: Organizer | undefined
  http: FastifyInstance | undefined
  httpPort = 0
  admin!: { token: string; show: boolean; file: string }
  private embedded: EmbeddedDatabase | undefined
  private wss: WebSocketServer | undefined
  private stopped = false

  constructor(
    readonly config: Config,
    log?: Logger,
  ) {
    this.log = log ?? createLogger(config.logLevel)
    this.metrics = createMetrics()
  }

  has(role: Config['roles'][number]): boolean {
    return this.config.roles.includes(role)
  }

  async start(): Promise<void> {
    const { config, log, metrics } = this
    mkdirSync(config.dataDir, { recursive: true })
    this.admin = adminToken(config)
    const opened = await openStore(config, log)
    this.store = opened.store
    this.embedded = opened.embedded

    const queue = createQueue(config, log.child({ component: 'queue' }))
    queue.onCommit = (ms) => metrics.commitSeconds.observe(ms / 1000)
    this.queue = queue
    await queue.start()

    if (this.has('gateway')) {
      this.credentials = new CredentialCache(this.store, log.child({ component: 'credentials' }))
      await this.credentials.start()
      this.mqtt = new MqttGateway(
        {
          host: config.host,
          port: config.mqttPort,
          maxPayloadBytes: config.maxPayloadBytes,
          connectTimeoutSeconds: config.mqttConnectTimeoutSeconds,
          maxKeepaliveSeconds: config.mqttMaxKeepaliveSeconds,
          receiveMaximum: config.mqttReceiveMaximum,
        },
        queue,
        this.credentials,
        metrics,
        log.child({ component: 'mqtt' }),
        new Sessions(this.store, log.child({ component: 'mqtt-sessions' })),
      )
      await this.mqtt.start()
    }

    if (this.has('ingest')) {
      const ingestLog = log.child({ component: 'ingest' })
      // Beside a gateway the ingest gets a thread of its own; alone in its process it needs none.
      if (this.has('gateway') && config.ingestThread) {
        const thread = new IngestThread(config, this.store.url, metrics, ingestLog)
        await thread.start()
        this.ingest = thread
      } else {
        const ingest = new Ingest(queue, this.store, metricsEvents(metrics), ingestLog, {
          batchSize: config.ingestBatchSize,
          batchMs: config.ingestBatchMs,
          concurrency: config.ingestConcurrency,
        })
        ingest.start()
        this.ingest = ingest
      }
    }

    this.heartbeat = new Heartbeat(
      this.store,
      config.roles,
      config.checkIntervalSeconds,
      log.child({ component: 'heartbeat' }),
    )
    await this.heartbeat.start()
    if (this.has('organizer')) {
      this.organizer = new Organizer(
        this.store,
        config.checkIntervalSeconds,
        log.child({ component: 'organizer' }),
      )
      await this.organizer.start()
    }

    if (config.httpPort !== null) await this.startHttp(config.httpPort)
  }

  private async startHttp(port: number): Promise<void> {
    const { config, metrics } = this
    const app = Fastify({
      loggerInstance: this.log.child({ component: 'http' }),
      logController: new LogController({ disableRequestLogging: true }),
      bodyLimit: config.maxPayloadBytes,
    })
    app.addSchema(ErrorBody)
    app.addSchema(DeviceBody)
    app.addSchema(QuarantineItem)
    app.setErrorHandler((err, req, reply) => {
      if (err instanceof IotError) {
        // A full or unreachable queue is temporary: say when to come back.
        if (err.statusCode === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS))
        return reply.code(err.statusCode).send({
          statusCode: err.statusCode,
          code: err.code,
          error: httpError(err.statusCode),
          message: err.message,
        })
      }
      const e = err as { statusCode?: number; validation?: unknown; message: string; code?: string }
      if (e.validation) {
        return reply
          .code(400)
          .send({ statusCode: 400, code: 'IOT_ERR_BAD_REQUEST', error: 'Bad Request', message: e.message })
      }
      if (e.statusCode && e.statusCode < 500) {
        return reply.code(e.statusCode).send({
          statusCode: e.statusCode,
          code: e.code ?? 'IOT_ERR_BAD_REQUEST',
          error: httpError(e.statusCode),
          message: e.message,
        })
      }
      req.log.error({ err }, 'request failed')
      return reply.code(500).send({
        statusCode: 500,
        code: 'IOT_ERR_INTERNAL',
        error: 'Internal Server Error',
        message: 'internal error; see the server log',
      })
    })
    await app.register(swagger, {
      openapi: {
        info: {
          title: 'iotcore',
          version: '0.1.0',
          description: 'Devices, telemetry and quarantine over REST.',
        },
        components: {
          securitySchemes: {
            admin: { type: 'http', scheme: 'bearer', description: 'the admin token' },
            device: { type: 'http', scheme: 'bearer', description: 'a device token' },
          },
        },
      },
    })
    await app.register(swaggerUi, { routePrefix: '/docs' })

    app.get('/healthz', { schema: { tags: ['operations'], summary: 'Alive' } }, async () => ({
      status: 'ok',
    }))
    app.get(
      '/readyz',
      { schema: { tags: ['operations'], summary: "Each component's state; 503 if any is down" } },
      async (_req, reply) => {
        const components = await this.readiness()
        const ok = Object.values(components).every((c) => c.ok)
        return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', components })
      },
    )
    app.get(
      '/metrics',
      { schema: { tags: ['operations'], summary: 'Prometheus metrics' } },
      async (_req, reply) => {
        const s = this.queue.stats()
        metrics.queueDepth.set(s.depth)
        metrics.queueOldestAge.set(s.oldestAgeSeconds)
        metrics.queueBytes.set(s.bytes)
        reply.type(metrics.registry.contentType)
        return metrics.registry.metrics()
      },
    )

    if (this.has('gateway')) {
      await app.register(httpIngest, {
        queue: this.queue,
        credentials: this.credentials!,
        metrics,
        maxPayloadBytes: config.maxPayloadBytes,
      })
    }
    if (this.has('api')) {
      const devices = new Devices(this.store, config.offlineAfterSeconds, this.credentials)
      await app.register(api, {
        prefix: '/api/v1',
        store: this.store,
        devices,
        queue: this.queue,
        metrics,
        adminToken: this.admin.token,
      })
      const { web } = await import('./web/index.js')
      await app.register(web)
    }
    await app.listen({ port, host: config.host })
    this.http = app as unknown as FastifyInstance
    this.httpPort = (app.server.address() as { port: number }).port
    if (this.mqtt) this.wss = attachWebSocket(app.server, this.mqtt, config.maxPayloadBytes)
  }

  async readiness(): Promise<Record<string, { ok: boolean; detail?: string; [k: string]: unknown }>> {
    const out: Record<string, { ok: boolean; detail?: string; [k: string]: unknown }> = {}
    try {
      await Promise.race([
        this.store.ping(),
        new Promise((_, rej) =>
          setTimeout(() => rej(new Error('no answer in time')), READY_PING_TIMEOUT_MS).unref(),
        ),
      ])
      out.database = { ok: true }
    } catch (err) {
      out.database = { ok: false, detail: (err as Error).message }
    }
    const q = this.queue.stats()
    out.queue = {
      ok: q.healthy && !q.full,
      kind: this.queue.kind,
      depth: q.depth,
      oldestAgeSeconds: q.oldestAgeSeconds,
      bytes: q.bytes,
      maxBytes: q.maxBytes,
      ...(q.full ? { detail: 'disk budget spent: not acknowledging' } : q.detail ? { detail: q.detail } : {}),
    }
    if (this.ingest)
      out.ingest = {
        ok: this.ingest.databaseUp,
        ...(this.ingest.lastError ? { detail: this.ingest.lastError } : {}),
      }
    if (this.mqtt)
      out.mqtt = {
        ok: this.config.mqttPort === null || this.mqtt.port > 0,
        connections: this.mqtt.connections.size,
      }
    return out
  }

  /** Graceful stop: stop accepting, let acknowledged appends land, finish in-flight batches, close. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    const log = this.log
    this.wss?.close()
    await this.mqtt?.stop().catch((err) => log.error({ err }, 'stopping MQTT'))
    await this.http?.close().catch((err) => log.error({ err }, 'stopping HTTP'))
    while (this.queue && this.queue.appending > 0) await new Promise((r) => setTimeout(r, 5))
    await this.ingest?.stop().catch((err) => log.error({ err }, 'stopping ingest'))
    await this.credentials?.stop()
    await this.organizer?.stop()
    await this.heartbeat?.stop()
    await this.queue?.stop().catch((err) => log.error({ err }, 'stopping queue'))
    await this.store?.stop().catch(() => {})
    await this.embedded?.stop().catch((err) => log.error({ err }, 'stopping PostgreSQL'))
  }
}

function httpError(status: number): string {
  return (
    {
      400: 'Bad Request',
      401: 'Unauthorized',
      403: 'Forbidden',
      404: 'Not Found',
      409: 'Conflict',
      413: 'Payload Too Large',
      503: 'Service Unavailable',
    }[status] ?? 'Error'
  )
}
