import type { Duplex } from 'node:stream'
import { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import { type Certificates, type ClientCertificate, clientCertificate } from '../../lib/tls.js'
import type { Metrics } from '../../metrics/index.js'
import type { AckSink, Queue, Transport } from '../../queue/types.js'
import { type Listener, listen } from '../listen.js'
import { MetricsSink } from './acks.js'
import { ConnState, ReasonCode } from './codes.js'
import { Connection } from './connection.js'
import { MqttCommands } from './downlink.js'
import { type FrameScan, scanFrames } from './framing.js'
import { silenceWhy } from './handlers/connect.js'
import type { OperatorTopic } from './operators.js'
import { SharedParser } from './parser.js'
import type { ResendWindow } from './resends.js'
import { NEVER_EXPIRES, type Sessions } from './sessions.js'

/** How often idle, keepalive and connect timeouts are checked: one timer for all connections. */
const SWEEP_INTERVAL_MS = 1000
/**
 * Resend windows of disconnected sessions kept at most, the oldest dropped first: each is at most Receive
 * Maximum x 16 bytes, so 10,000 of them stay within ~16 MiB at the default of 100.
 */
const MAX_PARKED = 10_000
/** Parked windows past their session's expiry are dropped every this many sweeps. */
const PARKED_SWEEPS = 60

export interface MqttGatewayOptions {
  host: string
  port: number | null
  /** MQTT over TLS, with `tls`; null: off. */
  mqttsPort: number | null
  /** The platform's certificate (lib/tls.ts); with IOTCORE_TLS_CA it also checks client certificates. */
  tls: Certificates | undefined
  maxPayloadBytes: number
  connectTimeoutSeconds: number
  maxKeepaliveSeconds: number
  /** Longest silence a v3.1.1 connection is held (keepalive 0 included): handlers/connect.ts. */
  idleLimitSeconds: number
  receiveMaximum: number
}

/**
 * The device gateway for MQTT 3.1.1 and 5 over TCP and WebSocket. Not a broker: devices publish into the
 * durable queue, and a QoS 1/2 publish is acknowledged only after its durable append (the receiver owns the
 * message once it sends PUBACK/PUBREC: [MQTT-4.3.2-4] / [MQTT-4.3.3-8], v3.1.1: MQTT-4.3.2-2 / MQTT-4.3.3-2).
 *
 * Laid out like Aedes: this file listens and keeps the client-id registry and the timeouts; connection.ts
 * reads one client's bytes; handlers/ has one file per packet type. Kept lean for 10,000s of connections: one
 * parser shared by all sockets (packets are framed first), one sweep timer for all timeouts, and per
 * connection only a small object.
 */
export class MqttGateway {
  private listeners: Listener[] = []
  readonly connections = new Set<Connection>()
  private readonly byClientId = new Map<string, Connection>()
  private readonly parser = new SharedParser()
  private sweepTimer: NodeJS.Timeout | undefined
  private readonly scan: FrameScan = { end: 0, need: 0, status: 0, size: 0, type: 0 }
  /** The sweep's clock, stamped on each chunk a connection reads instead of a Date.now() call per chunk. */
  now = Date.now()
  /** Largest packet we take: the payload limit plus room for the topic, properties and header. */
  readonly maxPacketSize: number
  private stopping = false
  private receivedTcp = 0
  private receivedWs = 0
  private readonly qos0Sinks = new Map<Transport, AckSink>()
  /**
   * Resend windows of sessions whose connection closed, by client key, until the client reconnects to its
   * session, the session expires (ms since the epoch; Infinity: never) or MAX_PARKED newer ones push it out.
   */
  private readonly parked = new Map<string, { window: ResendWindow; expires: number }>()
  private sweeps = 0
  private unwatch: (() => void) | undefined
  /** Downlink commands to the devices connected here. */
  readonly commands = new MqttCommands(this)
  /** Set by the wiring: the operators' alert topic (operators.ts). Unset, operator logins are refused. */
  operators: OperatorTopic | undefined
  port = 0
  /** The MQTTS port bound, or 0. */
  tlsPort = 0

  /** Whether the TCP listeners are bound (the service checks watch them). */
  get listening(): boolean {
    return this.listeners.length > 0 && this.listeners.every((l) => l.listening)
  }

  constructor(
    readonly opts: MqttGatewayOptions,
    readonly queue: Queue,
    readonly credentials: CredentialCache,
    readonly metrics: Metrics,
    readonly log: Logger,
    readonly sessions?: Sessions,
  ) {
    this.maxPacketSize = opts.maxPayloadBytes + 1024
    metrics.beforeCollect.push(() => this.flushReceived())
  }

  async start(): Promise<void> {
    this.unwatch = this.credentials.watch((ids) => this.revokeStale(ids))
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
    const { host, port, mqttsPort, tls } = this.opts
    const log = this.log
    if (port !== null) {
      const plain = await listen({ host, port, name: 'MQTT', log }, (socket) => this.accept(socket, 'mqtt'))
      this.listeners.push(plain)
      this.port = plain.port
    }
    if (tls && mqttsPort !== null) {
      // One gateway behind both ports: the same connection handling, one client-id registry.
      const secure = await listen(
        { host, port: mqttsPort, tls, clientCertificates: true, name: 'MQTTS', log },
        (socket) =>
          this.accept(socket, 'mqtt', socket instanceof TLSSocket ? clientCertificate(socket) : null),
      )
      this.listeners.push(secure)
      this.tlsPort = secure.port
    }
  }

  /** Stops accepting, tells v5 clients the server is shutting down, closes every connection. */
  async stop(): Promise<void> {
    this.stopping = true
    this.unwatch?.()
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    const closed = Promise.all(this.listeners.map((l) => l.close()))
    for (const c of [...this.connections]) c.disconnect(ReasonCode.serverShuttingDown, 'server shutting down')
    await closed
  }

  /**
   * Serves one connection on any duplex stream: a TCP or TLS socket or a WebSocket stream; with the client
   * certificate it presented over MQTTS (handlers/connect.ts).
   */
  accept(wire: Duplex, transport: Transport, certificate: ClientCertificate | null = null): void {
    if (this.stopping) {
      wire.destroy()
      return
    }
    const c = new Connection(this, wire, transport)
    c.certificate = certificate
    this.connections.add(c)
    this.metrics.mqttConnections.inc()
  }

  /** @internal Counted as plain numbers on the publish path; handed to prom-client when it collects. */
  countReceived(transport: Transport, n: number): void {
    if (transport === 'ws') this.receivedWs += n
    else this.receivedTcp += n
  }

  private flushReceived(): void {
    if (this.receivedTcp > 0) this.metrics.received.inc({ transport: 'mqtt' }, this.receivedTcp)
    if (this.receivedWs > 0) this.metrics.received.inc({ transport: 'ws' }, this.receivedWs)
    this.receivedTcp = 0
    this.receivedWs = 0
  }

  /** @internal QoS 0 readings (and wills) count as acked once durable, though nothing is sent back. */
  qos0Sink(transport: Transport): AckSink {
    let s = this.qos0Sinks.get(transport)
    if (!s) this.qos0Sinks.set(transport, (s = new MetricsSink(this.metrics, transport)))
    return s
  }

  /** @internal */
  closed(c: Connection): void {
    if (this.connections.delete(c)) this.metrics.mqttConnections.dec()
    this.commands.closed(c)
    if (c.operator !== null) this.operators?.closed(c)
    if (c.clientId !== undefined && this.byClientId.get(c.clientId) === c) this.byClientId.delete(c.clientId)
  }

  /**
   * @internal A second connection with the same client id takes the session over: the first is closed, v5
   * with DISCONNECT 0x8E [MQTT-3.1.4-3] (v3.1.1: MQTT-3.1.4-2).
   */
  register(c: Connection): void {
    const key = c.clientId!
    const old = this.byClientId.get(key)
    this.byClientId.set(key, c)
    if (old && old !== c)
      old.disconnect(ReasonCode.sessionTakenOver, 'another connection took over this client id')
  }

  /**
   * The credentials of these devices changed: every connection whose device no longer holds the token hash it
   * authenticated with is cut, on every gateway process, as each hears the change (devices/index.ts). A new
   * token's connections stay, and so do those that authenticated with a client certificate while their device
   * exists. One pass over the connections: changes are rare, admin-made.
   */
  private revokeStale(ids: readonly string[]): void {
    const changed = new Set(ids)
    for (const c of this.connections) {
      if (c.state !== ConnState.connected || !changed.has(c.deviceId) || this.authorized(c)) continue
      const now = this.credentials.current(c.deviceId)
      c.revoke(
        now ? "the device's token was rotated; connect with the new one" : 'the device was deleted',
        !now,
      )
    }
    // A gone device's sessions will not be resumed.
    for (const key of this.parked.keys()) {
      const deviceId = key.slice(0, key.indexOf('/'))
      if (changed.has(deviceId) && !this.credentials.current(deviceId)) this.parked.delete(key)
    }
  }

  /**
   * @internal Whether the connection's device still holds the credential it authenticated with: the token
   * hash, or for a client certificate (which a token rotation does not touch) the device itself.
   */
  authorized(c: Connection): boolean {
    const now = this.credentials.current(c.deviceId)
    return now !== undefined && (c.byCertificate || now.tokenHash === c.tokenHash)
  }

  /** @internal Keeps a closed connection's resend window for its session (resends.ts). */
  park(clientKey: string, window: ResendWindow, sessionExpirySeconds: number): void {
    const expires =
      sessionExpirySeconds === NEVER_EXPIRES
        ? Number.POSITIVE_INFINITY
        : Date.now() + sessionExpirySeconds * 1000
    this.parked.delete(clientKey)
    this.parked.set(clientKey, { window, expires })
    if (this.parked.size > MAX_PARKED) this.parked.delete(this.parked.keys().next().value!)
  }

  /** @internal The resend window parked for this session, taken out; null if none (or expired). */
  unpark(clientKey: string): ResendWindow | null {
    const p = this.parked.get(clientKey)
    if (!p) return null
    this.parked.delete(clientKey)
    return p.expires > Date.now() ? p.window : null
  }

  /** @internal Feeds whole packets of one connection to the shared parser. */
  parse(c: Connection, data: Buffer): void {
    this.parser.parse(c, data)
  }

  /** @internal */
  frames(buf: Buffer, maxPackets: number): FrameScan {
    return scanFrames(buf, this.maxPacketSize, maxPackets, this.scan)
  }

  private sweep(): void {
    const now = (this.now = Date.now())
    const connectDeadline = now - this.opts.connectTimeoutSeconds * 1000
    for (const c of this.connections) {
      if (c.state === ConnState.new || c.state === ConnState.auth) {
        if (c.lastActivity < connectDeadline) c.timeout('no CONNECT in time')
      } else if (
        c.state === ConnState.connected &&
        now - c.lastActivity > c.maxSilenceMs + SWEEP_INTERVAL_MS
      ) {
        // [MQTT-3.1.2-22] (v3.1.1: MQTT-3.1.2-24) one and a half times the Keep Alive without a packet: close;
        // v3.1.1 also past the idle limit (handlers/connect.ts). lastActivity is read from this sweep's clock,
        // up to one interval before the packet came: that interval is slack, or a client pinging well within
        // its Keep Alive could be cut off.
        c.timeout(silenceWhy(c))
      }
    }
    if (this.parked.size > 0 && ++this.sweeps % PARKED_SWEEPS === 0) {
      for (const [key, p] of this.parked) if (p.expires <= now) this.parked.delete(key)
    }
  }
}
