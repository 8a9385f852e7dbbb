import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { Server as TlsServer } from 'node:tls'
import Fastify, { type FastifyInstance, LogController } from 'fastify'
import type { Logger } from 'pino'
import { ErrorBody } from '../api/schemas.js'
import { IotError } from '../errors.js'
import type { Component } from '../lib/component.js'
import type { Certificates } from '../lib/tls.js'
import { schemaErrorFormatter, sendError } from './errors.js'

/**
 * Fastify with what every route shares: the one error rendering (thrown errors, schema errors, unknown
 * routes), the `Error` schema, and the OpenAPI document at /docs. Routes are registered by the caller. With
 * the platform's certificate it serves HTTPS only, renewed in place (lib/tls.ts), and so whatever shares the
 * port: the API, HTTP ingest, MQTT over WebSocket (wss://).
 */
export async function createHttpServer(
  log: Logger,
  bodyLimit: number,
  tls?: Certificates,
): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    schemaErrorFormatter,
    ...(tls ? { https: tls.serverOptions() } : {}),
  }) as unknown as FastifyInstance
  if (tls) tls.track(app.server as unknown as TlsServer)
  app.addSchema(ErrorBody)
  app.setErrorHandler(sendError)
  app.setNotFoundHandler((req, reply) =>
    sendError(new IotError('IOT_ERR_NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`), req, reply),
  )
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
  return app
}

export interface HttpServerOptions {
  host: string
  port: number
  /** The largest request body anywhere: the payload limit. */
  bodyLimit: number
  log: Logger
  /** The platform's certificate: HTTPS. */
  tls?: Certificates
  /** Registers the routes this process serves, which depend on its roles. */
  routes(app: FastifyInstance): Promise<void>
}

/** The HTTP listener as a component: the REST API, HTTP ingest, the ops routes and whatever else is wired. */
export class HttpServer implements Component {
  readonly name = 'http'
  app: FastifyInstance | undefined
  port = 0

  constructor(private readonly opts: HttpServerOptions) {}

  async start(): Promise<void> {
    const app = await createHttpServer(this.opts.log, this.opts.bodyLimit, this.opts.tls)
    this.app = app
    await this.opts.routes(app)
    await app.listen({ port: this.opts.port, host: this.opts.host })
    this.port = (app.server.address() as { port: number }).port
  }

  async stop(): Promise<void> {
    await this.app?.close()
  }
}
