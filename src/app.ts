import { mkdirSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { WebSocketServer } from 'ws'
import { type AdminToken, adminToken } from './api/admin-token.js'
import { AlertStream } from './api/alert-stream.js'
import { api } from './api/index.js'
import { CommandBody, DeviceBody, QuarantineItem } from './api/schemas.js'
import type { Config, Role } from './config/index.js'
import { CredentialCache, Devices } from './devices/index.js'
import { CommandDispatcher } from './gateway/dispatch.js'
import { httpIngest } from './gateway/http/index.js'
import { JsonlGateway } from './gateway/jsonl/gateway.js'
import { MqttGateway } from './gateway/mqtt/gateway.js'
import { OperatorTopic } from './gateway/mqtt/operators.js'
import { Sessions } from './gateway/mqtt/sessions.js'
import { attachWebSocket } from './gateway/mqtt/websocket.js'
import { OsmAndGateway } from './gateway/osmand/gateway.js'
import { SignalGateway } from './gateway/signal/gateway.js'
import { TeltonikaGateway } from './gateway/teltonika/gateway.js'
import { ops } from './http/ops.js'
import { HttpServer } from './http/server.js'
import { type Ingest, createIngest, metricsEvents, storeAlerts } from './ingest/index.js'
import { IngestThread } from './ingest/thread.js'
import { type Component, type Health, Lifecycle, type Part, builtAtStart } from './lib/component.js'
import { Certificates } from './lib/tls.js'
import { createLogger } from './logger.js'
import { type Metrics, createMetrics } from './metrics/index.js'
import { type Listening, ServiceChecks } from './organizer/checks.js'
import { Heartbeat, Organizer, serviceName } from './organizer/index.js'
import { createQueue } from './queue/index.js'
import type { Queue } from './queue/types.js'
import { EventFeed } from './store/event-feed.js'
import type { Store } from './store/index.js'
import { Database } from './store/open.js'

/** What a device protocol's listener is made with (App.deviceListener). */
interface DeviceListenerOptions {
  host: string
  port: number
  maxPayloadBytes: number
  tls?: Certificates
}

/** How often a stop looks whether the appends already acknowledged have landed. */
const APPENDS_POLL_MS = 5
/**
 * A process this many heartbeats silent is gone, as the organizer reports it: the commands it was sending are
 * queued again for the device's next connection.
 */
const GONE_AFTER_BEATS = 3

/**
 * The one place that wires the platform: a map from roles to components, started in order and stopped in
 * reverse. Data flows one way: gateways -> queue -> ingest -> store; the API reads the store.
 */
export class App {
  readonly log: Logger
  readonly metrics: Metrics
  store!: Store
  queue!: Queue
  credentials: CredentialCache | undefined
  /** The TLS certificate (IOTCORE_TLS_CERT/KEY), for every listener that serves TLS; undefined: no TLS. */
  tls: Certificates | undefined
  mqtt: MqttGateway | undefined
  teltonika: TeltonikaGateway | undefined
  osmand: OsmAndGateway | undefined
  jsonl: JsonlGateway | undefined
  signal: SignalGateway | undefined
  sessions: Sessions | undefined
  commands: CommandDispatcher | undefined
  ingest: Ingest | IngestThread | undefined
  heartbeat: Heartbeat | undefined
  organizer: Organizer | undefined
  /** The alert events as they commit, followed once for this process's readers (SSE, MQTT operators). */
  events: EventFeed | undefined
  alertStream: AlertStream | undefined
  operators: OperatorTopic | undefined
  checks: ServiceChecks | undefined
  http: FastifyInstance | undefined
  httpPort = 0
  admin!: AdminToken
  private lifecycle: Lifecycle | undefined

  constructor(
    readonly config: Config,
    log?: Logger,
  ) {
    this.log = log ?? createLogger(config.logLevel)
    this.metrics = createMetrics()
  }

  has(role: Role): boolean {
    return this.config.roles.includes(role)
  }

  /**
   * The components this process runs, by role, in start order. Stopped in reverse, this is the graceful stop:
   * the listeners close (WebSocket, MQTT, HTTP), the appends they acknowledged land, the ingest finishes its
   * batches, then the background parts, the queue and the database close.
   */
  private components(): Component[] {
    const { config } = this
    const every = true
    const gateway = this.has('gateway')
    const http = config.httpPort !== null
    const api = http && this.has('api')
    const plan: Array<[runs: boolean, make: () => Component]> = [
      // First: a certificate that cannot be used stops the start before anything else is up.
      [config.tlsCert !== undefined && (http || gateway), () => this.tlsComponent()],
      [every, () => this.databaseComponent()],
      [every, () => this.queueComponent()],
      [every, () => this.heartbeatComponent()],
      [this.has('organizer'), () => this.organizerComponent()],
      [gateway, () => this.credentialsComponent()],
      [gateway, () => this.sessionsComponent()],
      // Before the listeners, which attach their command channels to it as they are built.
      [gateway, () => this.commandsComponent()],
      [this.has('ingest'), () => this.ingestComponent()],
      [every, () => this.appendsComponent()],
      [api || gateway, () => this.eventFeedComponent()],
      [api, () => this.alertStreamComponent()],
      [http, () => this.httpComponent()],
      [gateway, () => this.operatorsComponent()],
      [gateway, () => this.mqttComponent()],
      [gateway && http, () => this.websocketComponent()],
      [gateway && config.teltonikaPort !== null, () => this.teltonikaComponent()],
      [gateway && config.osmandPort !== null, () => this.deviceListener('osmand', OsmAndGateway)],
      [gateway && config.jsonlPort !== null, () => this.deviceListener('jsonl', JsonlGateway)],
      [gateway && config.signalPort !== null, () => this.deviceListener('signal', SignalGateway)],
      [every, () => this.checksComponent()],
    ]
    return plan.filter(([runs]) => runs).map(([, make]) => make())
  }

  async start(): Promise<void> {
    mkdirSync(this.config.dataDir, { recursive: true })
    this.admin = adminToken(this.config)
    this.lifecycle = new Lifecycle(this.components(), this.log)
    await this.lifecycle.start()
  }

  /** Graceful stop: stop accepting, let acknowledged appends land, finish in-flight batches, close. */
  async stop(): Promise<void> {
    await this.lifecycle?.stop()
  }

  /** /readyz: each component's health, by name. */
  readiness(): Promise<Record<string, Health>> {
    return this.lifecycle?.health() ?? Promise.resolve({})
  }

  private child(component: string): Logger {
    return this.log.child({ component })
  }

  /** Made before the components that serve TLS are (the HTTP server takes it when it is made). */
  private tlsComponent(): Component {
    const { tlsCert, tlsKey, tlsCa } = this.config
    const files = { cert: tlsCert!, key: tlsKey!, ...(tlsCa ? { ca: tlsCa } : {}) }
    this.tls = new Certificates(files, this.child('tls'))
    return this.tls
  }

  private databaseComponent(): Component {
    const db = new Database(this.config, this.log)
    return {
      name: db.name,
      start: async () => {
        await db.start()
        this.store = db.store
      },
      stop: () => db.stop(),
      health: () => db.health(),
    }
  }

  private queueComponent(): Component {
    const queue = createQueue(this.config, this.child('queue'))
    queue.onCommit = (ms) => this.metrics.commitSeconds.observe(ms / 1000)
    this.queue = queue
    return {
      name: 'queue',
      start: () => queue.start(),
      stop: () => queue.stop(),
      health: () => {
        const q = queue.stats()
        return {
          ok: q.healthy && !q.full,
          kind: queue.kind,
          depth: q.depth,
          oldestAgeSeconds: q.oldestAgeSeconds,
          bytes: q.bytes,
          maxBytes: q.maxBytes,
          ...(q.full
            ? { detail: 'disk budget spent: not acknowledging' }
            : q.detail
              ? { detail: q.detail }
              : {}),
        }
      },
    }
  }

  /** A component whose part is built when its turn to start comes (builtAtStart), logging as `name`. */
  private built<T extends Part>(
    name: string,
    build: (log: Logger) => T,
    health?: (part: T | undefined) => Health,
  ): Component {
    return builtAtStart(name, () => build(this.child(name)), health)
  }

  private heartbeatComponent(): Component {
    const { roles, checkIntervalSeconds } = this.config
    return this.built(
      'heartbeat',
      (log) => (this.heartbeat = new Heartbeat(this.store, roles, checkIntervalSeconds, this.metrics, log)),
    )
  }

  private organizerComponent(): Component {
    const { checkIntervalSeconds, offlineAfterSeconds, webhookRetryForSeconds } = this.config
    return this.built(
      'organizer',
      (log) =>
        (this.organizer = new Organizer(
          this.store,
          { checkIntervalSeconds, offlineAfterSeconds, webhookRetryForSeconds },
          this.queue,
          this.metrics,
          log,
        )),
    )
  }

  /** The one LISTEN for alert events of this process, which its readers follow. */
  private eventFeedComponent(): Component {
    return this.built(
      'events',
      (log) => (this.events = new EventFeed(this.store, log)),
      (events) => events?.health() ?? { ok: false, detail: 'not started' },
    )
  }

  /** The SSE streams; started before the HTTP server, whose close ends their requests first. */
  private alertStreamComponent(): Component {
    return this.built(
      'alert-stream',
      (log) => (this.alertStream = new AlertStream(this.events!, this.store, log)),
    )
  }

  /** `$iotcore/alerts/<type>` for operator MQTT clients; made before the gateway, which takes it. */
  private operatorsComponent(): Component {
    return this.built(
      'mqtt-operators',
      (log) => (this.operators = new OperatorTopic(this.events!, this.admin.token, log)),
      (operators) => operators?.health() ?? { ok: false, detail: 'not started' },
    )
  }

  /**
   * The service checks of this process (checks.ts). Started last, once the listeners it checks are bound, and
   * stopped first, so a graceful stop closing them raises no alert.
   */
  private checksComponent(): Component {
    const { config } = this
    const listeners: Listening[] = []
    if (config.httpPort !== null)
      listeners.push({ name: 'http', listening: () => this.http?.server.listening ?? false })
    if (this.has('gateway') && config.mqttPort !== null)
      listeners.push({ name: 'mqtt', listening: () => this.mqtt?.listening ?? false })
    if (this.has('gateway') && config.teltonikaPort !== null)
      listeners.push({ name: 'teltonika', listening: () => this.teltonika?.listening ?? false })
    for (const name of ['osmand', 'jsonl', 'signal'] as const)
      if (this.has('gateway') && config[`${name}Port`] !== null)
        listeners.push({ name, listening: () => this[name]?.listening ?? false })
    return this.built(
      'checks',
      (log) =>
        (this.checks = new ServiceChecks(
          this.store,
          this.queue,
          this.metrics,
          {
            service: serviceName(config.roles),
            heartbeatId: () => this.heartbeat?.id,
            roles: config.roles,
            dataDir: config.dataDir,
            intervalSeconds: config.checkIntervalSeconds,
            maxIngestLagSeconds: config.maxIngestLagSeconds,
            minFreeDiskBytes: config.minFreeDiskBytes,
            listeners,
          },
          log,
        )),
      (checks) => checks?.health() ?? { ok: false, detail: 'not started' },
    )
  }

  private credentialsComponent(): Component {
    return this.built('credentials', (log) => (this.credentials = new CredentialCache(this.store, log)))
  }

  private sessionsComponent(): Component {
    return this.built('mqtt-sessions', (log) => (this.sessions = new Sessions(this.store, log)))
  }

  private commandsComponent(): Component {
    const { checkIntervalSeconds } = this.config
    return this.built(
      'commands',
      (log) =>
        (this.commands = new CommandDispatcher(
          this.store,
          { serviceId: this.heartbeat!.id, silentAfterSeconds: checkIntervalSeconds * GONE_AFTER_BEATS },
          log,
        )),
    )
  }

  private ingestComponent(): Component {
    const { config, metrics } = this
    return this.built(
      'ingest',
      (log) =>
        (this.ingest =
          // Beside a gateway the ingest gets a thread of its own; alone in its process it needs none.
          this.has('gateway') && config.ingestThread
            ? new IngestThread(config, this.store.url, metrics, log)
            : createIngest(config, {
                queue: this.queue,
                writer: this.store,
                events: metricsEvents(metrics),
                log,
                alerts: storeAlerts(this.store.alerts),
              })),
      (ingest) => ({
        ok: ingest?.databaseUp ?? false,
        ...(ingest?.lastError ? { detail: ingest.lastError } : {}),
      }),
    )
  }

  private mqttComponent(): Component {
    const { config } = this
    return this.built(
      'mqtt',
      (log) => {
        const mqtt = new MqttGateway(
          {
            host: config.host,
            port: config.mqttPort,
            mqttsPort: config.mqttsPort,
            tls: this.tls,
            maxPayloadBytes: config.maxPayloadBytes,
            connectTimeoutSeconds: config.mqttConnectTimeoutSeconds,
            maxKeepaliveSeconds: config.mqttMaxKeepaliveSeconds,
            idleLimitSeconds: config.mqttIdleLimitSeconds,
            receiveMaximum: config.mqttReceiveMaximum,
          },
          this.queue,
          this.credentials!,
          this.metrics,
          log,
          this.sessions,
        )
        this.commands!.attach(mqtt.commands)
        mqtt.commands.outcomes = this.commands
        mqtt.operators = this.operators
        return (this.mqtt = mqtt)
      },
      (mqtt) => ({
        ok:
          (config.mqttPort === null || (mqtt?.port ?? 0) > 0) &&
          (!this.tls || config.mqttsPort === null || (mqtt?.tlsPort ?? 0) > 0),
        connections: mqtt?.connections.size ?? 0,
      }),
    )
  }

  /**
   * Teltonika over TCP (TLS with a certificate) and UDP on one port number; `teltonika.port` / `udpPort` are
   * the bound ones. Its Codec 12 channel is attached to the dispatcher before it accepts connections.
   */
  private teltonikaComponent(): Component {
    const { config } = this
    return this.built(
      'teltonika',
      (log) => {
        const gw = new TeltonikaGateway(
          {
            host: config.host,
            port: config.teltonikaPort!,
            timeoutSeconds: config.teltonikaTimeoutSeconds,
            tls: this.tls,
          },
          this.queue,
          this.credentials!,
          this.metrics,
          log,
        )
        this.commands!.attach(gw)
        return (this.teltonika = gw)
      },
      (gw) => gw?.health() ?? { ok: false },
    )
  }

  /**
   * A device protocol's listener (OsmAnd, JSON lines, the founders' signal) on its configured port, kept as
   * `this[name]` (tests read the bound port there); /readyz shows its health. The certificate goes to the
   * JSON-lines listener, which takes TLS with one; OsmAnd and the signal stay plain, as their senders are.
   */
  private deviceListener<K extends 'osmand' | 'jsonl' | 'signal'>(
    name: K,
    Gateway: new (
      opts: DeviceListenerOptions,
      queue: Queue,
      credentials: CredentialCache,
      metrics: Metrics,
      log: Logger,
    ) => NonNullable<App[K]>,
  ): Component {
    const { host, maxPayloadBytes } = this.config
    const port = this.config[`${name}Port`]!
    return this.built(
      name,
      (log) =>
        ((this as App)[name] = new Gateway(
          { host, port, maxPayloadBytes, tls: this.tls },
          this.queue,
          this.credentials!,
          this.metrics,
          log,
        )),
      (gw) => gw?.health() ?? { ok: false },
    )
  }

  /**
   * Stops nothing itself: on the way down, once the listeners are closed, it waits until every append they
   * (or an API replay) acknowledged or are about to has landed, before the ingest and the queue stop.
   */
  private appendsComponent(): Component {
    return {
      name: 'appends',
      start: async () => {},
      stop: async () => {
        while (this.queue.appending > 0) await new Promise((r) => setTimeout(r, APPENDS_POLL_MS))
      },
    }
  }

  private httpComponent(): Component {
    const { config, metrics } = this
    const server = new HttpServer({
      host: config.host,
      port: config.httpPort!,
      bodyLimit: config.maxPayloadBytes,
      log: this.child('http'),
      tls: this.tls,
      routes: async (app) => {
        await app.register(ops, { readiness: () => this.readiness(), metrics, queue: this.queue })
        if (this.has('gateway')) {
          await app.register(httpIngest, {
            queue: this.queue,
            credentials: this.credentials!,
            metrics,
            maxPayloadBytes: config.maxPayloadBytes,
            idempotency: this.store.idempotency,
          })
        }
        if (this.has('api')) {
          app.addSchema(DeviceBody)
          app.addSchema(QuarantineItem)
          app.addSchema(CommandBody)
          await app.register(api, {
            prefix: '/api/v1',
            store: this.store,
            devices: new Devices(this.store, config.offlineAfterSeconds, this.credentials),
            queue: this.queue,
            metrics,
            adminToken: this.admin.token,
            console: { config, ports: () => ({ http: this.httpPort, mqtt: this.mqtt?.port }) },
            alertStream: this.alertStream!,
          })
          const { web } = await import('./web/index.js')
          await app.register(web, { mapTiles: config.mapTiles })
        }
      },
    })
    return {
      name: server.name,
      start: async () => {
        await server.start()
        this.http = server.app
        this.httpPort = server.port
      },
      stop: () => server.stop(),
    }
  }

  /** MQTT over WebSocket at /mqtt on the HTTP port; closed first on the way down. */
  private websocketComponent(): Component {
    let wss: WebSocketServer | undefined
    return {
      name: 'websocket',
      start: async () => {
        wss = attachWebSocket(this.http!.server, this.mqtt!, this.config.maxPayloadBytes)
      },
      stop: async () => wss?.close(),
    }
  }
}
