import { randomBytes } from 'node:crypto'
import { type Server, createServer } from 'node:net'
import type { Duplex } from 'node:stream'
import mqtt from 'mqtt-packet'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import type { Metrics } from '../../metrics/index.js'
import type { AckSink, Envelope, Queue, Transport } from '../../queue/types.js'
import { type QuarantineReason, judgePayload } from '../../readings/index.js'
import { envelopeId, quarantineRefused } from '../accept.js'
import { ConnState, PacketType, ReasonCode as RC } from './codes.js'
import { type FrameScan, FrameStatus, decodeVbi, scanFrames, vbi } from './framing.js'
import { NEVER_EXPIRES, type Sessions } from './sessions.js'
import { classifyPublish, devicePrefix, subscriptionAllowed } from './topics.js'
import { checkPacket } from './validate.js'

/** How often idle, keepalive and connect timeouts are checked: one timer for all connections. */
const SWEEP_INTERVAL_MS = 1000
/** A v3.1.1 client cannot be told a Receive Maximum; past this many unacked publishes we stop reading. */
const V3_INFLIGHT_PAUSE = 1000

/** MQTT 3.1.1 CONNACK return codes ([MQTT-3.2.2.3] table 3.1). */
const V3_CONNACK = {
  accepted: 0,
  unacceptableProtocol: 1,
  identifierRejected: 2,
  serverUnavailable: 3,
  badUsernameOrPassword: 4,
  notAuthorized: 5,
} as const

/** Token bits: packet id in the low 16, then QoS 2, then the v5 reason code to answer with. */
const TOKEN_QOS2 = 1 << 16
const TOKEN_REASON_SHIFT = 17

export interface MqttGatewayOptions {
  host: string
  port: number | null
  maxPayloadBytes: number
  connectTimeoutSeconds: number
  maxKeepaliveSeconds: number
  receiveMaximum: number
}

type AnyPacket = mqtt.Packet & Record<string, any>

/**
 * The device gateway for MQTT 3.1.1 and 5 over TCP and WebSocket. Not a broker: devices publish into the
 * durable queue, and a QoS 1/2 publish is acknowledged only after its durable append [MQTT-4.3.2-2 /
 * 4.3.3-2: the receiver owns the message once it sends PUBACK/PUBREC].
 *
 * Kept lean for 10,000s of connections: one parser shared by all sockets (packets are framed here first),
 * one sweep timer for all timeouts, and per connection only a small object.
 */
export class MqttGateway {
  private server: Server | undefined
  readonly connections = new Set<Connection>()
  private readonly byClientId = new Map<string, Connection>()
  private parser = this.newParser()
  private parserFailed = false
  private current: Connection | undefined
  private sweepTimer: NodeJS.Timeout | undefined
  private readonly scan: FrameScan = { end: 0, need: 0, status: 0, size: 0, type: 0 }
  now = Date.now()
  /** Largest packet we take: the payload limit plus room for the topic, properties and header. */
  readonly maxPacketSize: number
  private stopping = false
  private receivedTcp = 0
  /** The one PUBLISH object the fast path fills: handlers read it synchronously and keep nothing of it. */
  readonly scratch = {
    cmd: 'publish',
    qos: 0,
    dup: false,
    retain: false,
    messageId: undefined,
    topic: '',
    payload: EMPTY,
  } as AnyPacket
  private receivedWs = 0
  private readonly qos0Sinks = new Map<Transport, AckSink>()
  port = 0

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
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
    if (this.opts.port === null) return
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket, 'mqtt'))
    server.on('error', (err) => this.log.error({ err }, 'MQTT listener error'))
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.opts.port!, this.opts.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.port = (server.address() as { port: number }).port
    this.log.info({ port: this.port }, 'MQTT gateway listening')
  }

  /** Stops accepting, tells v5 clients the server is shutting down, closes every connection. */
  async stop(): Promise<void> {
    this.stopping = true
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    const closed = this.server ? new Promise<void>((r) => this.server!.close(() => r())) : Promise.resolve()
    for (const c of [...this.connections]) c.disconnect(RC.serverShuttingDown, 'server shutting down')
    await closed
  }

  /** Serves one connection on any duplex stream: a TCP socket or a WebSocket stream. */
  accept(wire: Duplex, transport: Transport): void {
    if (this.stopping) {
      wire.destroy()
      return
    }
    const c = new Connection(this, wire, transport)
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

  /** @internal QoS 0 readings count as acked once durable, though nothing is sent back. */
  qos0Sink(transport: Transport): AckSink {
    let s = this.qos0Sinks.get(transport)
    if (!s) this.qos0Sinks.set(transport, (s = new MetricsSink(this.metrics, transport)))
    return s
  }

  /** @internal */
  closed(c: Connection): void {
    if (this.connections.delete(c)) this.metrics.mqttConnections.dec()
    if (c.clientId !== undefined && this.byClientId.get(c.clientId) === c) this.byClientId.delete(c.clientId)
  }

  /** @internal [MQTT-3.1.4-2] a second connection with the same client id takes the session over. */
  register(c: Connection): void {
    const key = c.clientId!
    const old = this.byClientId.get(key)
    this.byClientId.set(key, c)
    if (old && old !== c) old.disconnect(RC.sessionTakenOver, 'another connection took over this client id')
  }

  /** @internal Feeds whole packets of one connection to the shared parser. */
  parse(c: Connection, data: Buffer): void {
    this.current = c
    ;(this.parser as unknown as { settings: { protocolVersion: number } }).settings.protocolVersion =
      c.version || 4
    let left = -1
    try {
      left = this.parser.parse(data)
    } catch (err) {
      // A handler that throws must not take the listener down with it: close that connection only.
      this.log.error({ err, deviceId: c.deviceId || undefined }, 'MQTT packet handler failed; closing')
      c.disconnect(RC.unspecifiedError, 'internal error')
    } finally {
      this.current = undefined
      // Whole frames leave the parser empty. After a malformed packet (or a handler that threw) it still holds
      // that packet's bytes and read offset (mqtt-packet's reset keeps `_pos`), which would shift or glue the
      // next connection's packets onto this one's: start a fresh parser instead.
      if (left !== 0 || this.parserFailed) this.parser = this.newParser()
    }
  }

  private newParser(): ReturnType<typeof mqtt.parser> {
    this.parserFailed = false
    const parser = mqtt.parser({ protocolVersion: 4 })
    parser.on('packet', (p: AnyPacket) => this.current?.onPacket(p))
    parser.on('error', (err: Error) => {
      this.parserFailed = true
      this.current?.onParseError(err)
    })
    return parser
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
        now - c.lastActivity > c.keepalive * 1500 + SWEEP_INTERVAL_MS
      ) {
        // [MQTT-3.1.2-24] one and a half times the Keep Alive without a packet: close. lastActivity is
        // read from this sweep's clock, up to one interval before the packet came: that interval is slack,
        // or a client pinging well within its Keep Alive could be cut off.
        c.timeout('keep alive expired')
      }
    }
  }
}

/** One MQTT client. Small on purpose: most fields are numbers; collections are created only when used. */
class Connection implements AckSink {
  state: ConnState = ConnState.new
  version = 0
  keepalive = 0
  lastActivity: number
  deviceId = ''
  clientId: string | undefined
  private telemetryTopic = ''
  private telemetryTopicBytes: Buffer | null = null
  private pending: Buffer[] | null = null
  private pendingBytes = 0
  private pendingNeed = 0
  private inflight = 0
  private paused = false
  private acks: number[] | null = null
  private ackedReadings = 0
  private qos2: Set<number> | null = null
  private subs: Map<string, number> | null = null
  /** Seconds the session outlives the connection; 0: it ends with it. */
  private sessionExpiry = 0
  private will: AnyPacket['will'] | null = null

  constructor(
    private readonly gw: MqttGateway,
    private readonly wire: Duplex,
    readonly transport: Transport,
  ) {
    // The real time, not the sweep clock (up to a second behind): the connect timeout counts from here.
    this.lastActivity = Date.now()
    wire.on('data', (chunk: Buffer) => this.onData(chunk))
    wire.on('error', () => this.teardown(false))
    wire.on('close', () => this.teardown(false))
    wire.on('end', () => this.teardown(false))
  }

  // ---- input

  private onData(chunk: Buffer): void {
    if (this.state === ConnState.closed) return
    // Before CONNACK, lastActivity stays the accept time: the connect timeout counts from there, so a
    // CONNECT trickled a byte at a time cannot hold the socket forever.
    if (this.state === ConnState.connected) this.lastActivity = this.gw.now
    if (this.pending !== null) {
      this.pending.push(chunk)
      this.pendingBytes += chunk.length
      if (this.pendingNeed > 0 && this.pendingBytes < this.pendingNeed) return
      chunk = Buffer.concat(this.pending, this.pendingBytes)
      this.pending = null
      this.pendingBytes = 0
      this.pendingNeed = 0
    }
    this.consume(chunk)
  }

  private consume(data: Buffer): void {
    // Before the CONNECT is accepted, only it is parsed; whatever follows waits for the authentication.
    const connected = this.state === ConnState.connected
    const scan = this.gw.frames(data, connected ? Number.MAX_SAFE_INTEGER : 1)
    const { end, need, status, size, type } = scan
    // mqtt-packet is lenient: whole packets are checked on their bytes first, and the first malformed one is
    // answered with a disconnect (v5: its reason code) after the packets before it [MQTT-4.13.1-1].
    if (connected) {
      if (end > 0 && !this.packets(data, end)) return
    } else if (end > 0) this.gw.parse(this, end === data.length ? data : data.subarray(0, end))
    if (status === FrameStatus.malformed)
      return this.protocolError(RC.malformedPacket, 'malformed remaining length')
    if (status === FrameStatus.tooLarge) return this.tooLarge(size, type)
    if (this.state === ConnState.closed || end === data.length) return
    // Keep the rest as a copy: a slice would pin the socket's whole read buffer for an idle connection.
    const rest = Buffer.from(data.subarray(end))
    this.pending = [rest]
    this.pendingBytes = rest.length
    this.pendingNeed = need
    // While the CONNECT is being authenticated, what follows it waits. A CONNECT that is itself still
    // incomplete (ConnState.new) must keep reading, or its rest never arrives.
    if (this.state === ConnState.auth) this.pause()
  }

  /**
   * Handles the whole packets in `data[0, end)`; false if the connection closed on the way. Each packet is
   * checked on its bytes first. The common PUBLISH (no v5 properties) is decoded here, straight from the
   * bytes; runs of other packets go through the shared mqtt-packet parser, in order.
   */
  private packets(data: Buffer, end: number): boolean {
    const v5 = this.version === 5
    let pos = 0
    let run = 0
    while (pos < end) {
      const i = decodeVbi(data, pos + 1, end)
      const next = i + vbi.value
      const bad = checkPacket(data, pos, i, next, this.version)
      if (bad) {
        if (pos > run) this.gw.parse(this, data.subarray(run, pos))
        if (this.state !== ConnState.closed) this.protocolError(bad.rc, bad.why)
        return false
      }
      if (data[pos] >> 4 === PacketType.publish) {
        // [MQTT-3.3.2] topic (2-byte length + UTF-8, validated above), packet id if QoS > 0, v5 properties.
        const flags = data[pos] & 0x0f
        const qos = (flags >> 1) & 3
        const topicLen = (data[i] << 8) | data[i + 1]
        let at = i + 2 + topicLen
        let pid = 0
        if (qos > 0) {
          pid = (data[at] << 8) | data[at + 1]
          at += 2
        }
        if (!v5 || data[at] === 0) {
          if (v5) at++
          if (pos > run) {
            this.gw.parse(this, data.subarray(run, pos))
            if (this.state === ConnState.closed) return false
          }
          const p = this.gw.scratch
          p.qos = qos
          p.dup = (flags & 8) !== 0
          p.retain = (flags & 1) !== 0
          p.messageId = qos > 0 ? pid : undefined
          p.topic = this.topicAt(data, i + 2, topicLen)
          p.payload = data.subarray(at, next)
          this.onPublish(p)
          if (this.state === ConnState.closed) return false
          run = next
        }
      }
      pos = next
    }
    if (end > run) this.gw.parse(this, data.subarray(run, end))
    return this.state !== ConnState.closed
  }

  /** The topic as a string; the device's own telemetry topic, by far the most common, without decoding. */
  private topicAt(data: Buffer, at: number, len: number): string {
    const own = this.telemetryTopicBytes
    if (own !== null && len === own.length && data.compare(own, 0, len, at, at + len) === 0)
      return this.telemetryTopic
    return data.toString('utf8', at, at + len)
  }

  onParseError(err: Error): void {
    if (this.state === ConnState.new && /protocol version/i.test(err.message)) {
      // [MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01 (or 0x84 in v5's terms), then close.
      this.write(
        mqtt.generate({ cmd: 'connack', returnCode: V3_CONNACK.unacceptableProtocol, sessionPresent: false }),
      )
      return this.close(`unsupported protocol version`)
    }
    this.protocolError(RC.malformedPacket, err.message)
  }

  onPacket(p: AnyPacket): void {
    if (this.state === ConnState.closed) return
    if (this.state === ConnState.new) {
      // [MQTT-3.1.0-1] the first packet from the client must be CONNECT.
      if (p.cmd !== 'connect') return this.close(`first packet was ${p.cmd}, not connect`)
      return this.onConnect(p)
    }
    switch (p.cmd) {
      case 'publish':
        return this.onPublish(p)
      case 'pingreq':
        return this.write(PINGRESP)
      case 'pubrel':
        return this.onPubrel(p)
      case 'puback':
      case 'pubrec':
      case 'pubcomp':
        // Acks of downlink messages; commands are delivered at QoS 0 until downlinks land.
        return
      case 'subscribe':
        return this.onSubscribe(p)
      case 'unsubscribe':
        return this.onUnsubscribe(p)
      case 'disconnect':
        // [MQTT-3.14.4-3] a normal DISCONNECT discards the will; v5 reason 0x04 asks for it to be sent.
        if (!(this.version === 5 && p.reasonCode === 0x04)) this.will = null
        return this.close('client disconnected', true)
      case 'connect':
        // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
        return this.protocolError(RC.protocolError, 'second CONNECT')
      default:
        // CONNACK, SUBACK, UNSUBACK, PINGRESP and AUTH are never sent by a client to us.
        return this.protocolError(RC.protocolError, `unexpected ${p.cmd} packet`)
    }
  }

  // ---- CONNECT

  private onConnect(p: AnyPacket): void {
    this.version = p.protocolVersion ?? 4
    this.state = ConnState.auth
    const v5 = this.version === 5
    const props = p.properties ?? {}
    if (v5 && props.authenticationMethod !== undefined) {
      return this.refuseConnect(
        RC.badAuthenticationMethod,
        V3_CONNACK.notAuthorized,
        'enhanced authentication is not supported',
      )
    }
    if (p.username === undefined || p.password === undefined) {
      return this.refuseConnect(
        RC.badUsernameOrPassword,
        V3_CONNACK.badUsernameOrPassword,
        'username (device id) and password (device token) are required',
      )
    }
    // [MQTT-3.1.3-7] v3.1.1: an empty client id needs a clean session.
    if (!v5 && p.clientId === '' && !p.clean) {
      return this.refuseConnect(
        RC.protocolError,
        V3_CONNACK.identifierRejected,
        'empty client id needs clean session',
      )
    }
    const deviceId = p.username
    const token = p.password.toString('utf8')
    this.pause()
    this.gw.credentials.verify(deviceId, token).then(
      (ok) => this.afterAuth(p, deviceId, ok),
      () => this.afterAuth(p, deviceId, false),
    )
  }

  private afterAuth(p: AnyPacket, deviceId: string, ok: boolean): void {
    if (this.state !== ConnState.auth) return
    const v5 = this.version === 5
    if (!ok) {
      this.gw.log.info(
        { deviceId, transport: this.transport },
        'MQTT connect refused: bad device id or token',
      )
      return this.refuseConnect(
        RC.badUsernameOrPassword,
        V3_CONNACK.badUsernameOrPassword,
        'bad device id or token',
      )
    }
    this.deviceId = deviceId
    this.telemetryTopic = `${devicePrefix(deviceId)}telemetry`
    this.telemetryTopicBytes = Buffer.from(this.telemetryTopic)
    if (p.will) {
      if (classifyPublish(deviceId, p.will.topic) !== 'telemetry') {
        return this.refuseConnect(
          RC.notAuthorized,
          V3_CONNACK.notAuthorized,
          `will topic must be ${this.telemetryTopic}`,
        )
      }
      // [MQTT-3.2.2-14] with Retain Available 0, a will with retain set is refused with 0x9A.
      if (v5 && p.will.retain)
        return this.refuseConnect(RC.retainNotSupported, V3_CONNACK.notAuthorized, 'retain is not supported')
      this.will = p.will
    }
    const max = this.gw.opts.maxKeepaliveSeconds
    const asked = p.keepalive ?? 0
    this.keepalive = asked === 0 || asked > max ? max : asked
    const properties: Record<string, unknown> = {}
    if (v5) {
      // [MQTT-3.2.2-21] if the server sends Server Keep Alive, the client must use it.
      if (this.keepalive !== asked) properties.serverKeepAlive = this.keepalive
      properties.receiveMaximum = this.gw.opts.receiveMaximum
      properties.maximumPacketSize = this.gw.maxPacketSize
      properties.retainAvailable = false
      properties.sharedSubscriptionAvailable = false
      properties.topicAliasMaximum = 0
      if (p.clientId === '') {
        // [MQTT-3.2.2-16] an empty client id gets one assigned.
        p.clientId = `${deviceId}-${randomBytes(4).toString('hex')}`
        properties.assignedClientIdentifier = p.clientId
      }
    }
    this.clientId = `${deviceId}/${p.clientId}`
    const sessions = this.gw.sessions
    const cleanStart = p.clean !== false
    this.sessionExpiry = v5 ? (p.properties?.sessionExpiryInterval ?? 0) : cleanStart ? 0 : NEVER_EXPIRES
    if (!sessions || (cleanStart && this.sessionExpiry === 0)) {
      // [MQTT-3.1.2-6 / v5 3.1.2-4] a clean start discards any session kept under this client id.
      if (sessions) sessions.discard(this.clientId).catch(() => {})
      return this.accept(properties, undefined)
    }
    const key = this.clientId
    const load = cleanStart ? sessions.discard(key).then(() => undefined) : sessions.load(key)
    load.then(
      (subs) => this.accept(properties, subs),
      (err) => {
        // Without the database a session cannot be resumed: say so with Session Present 0.
        this.gw.log.warn({ deviceId, err: (err as Error).message }, 'MQTT session not loaded')
        this.accept(properties, undefined)
      },
    )
  }

  private accept(properties: Record<string, unknown>, restored: Map<string, number> | undefined): void {
    if (this.state !== ConnState.auth) return
    const v5 = this.version === 5
    if (restored) this.subs = restored
    this.saveSession()
    this.gw.register(this)
    this.state = ConnState.connected
    this.lastActivity = this.gw.now
    // [MQTT-3.2.2-2/-3] Session Present says whether the session was resumed.
    const sessionPresent = restored !== undefined
    this.write(
      mqtt.generate(
        v5
          ? { cmd: 'connack', reasonCode: RC.success, sessionPresent, properties }
          : { cmd: 'connack', returnCode: V3_CONNACK.accepted, sessionPresent },
        { protocolVersion: this.version },
      ),
    )
    this.resume()
    if (this.pending !== null) {
      const data = Buffer.concat(this.pending, this.pendingBytes)
      this.pending = null
      this.pendingBytes = 0
      this.pendingNeed = 0
      this.consume(data)
    }
  }

  private refuseConnect(rc5: number, rc3: number, why: string): void {
    // [MQTT-3.2.2-6] a CONNACK with a non-zero code is followed by closing the connection.
    this.write(
      this.version === 5
        ? mqtt.generate(
            { cmd: 'connack', reasonCode: rc5, sessionPresent: false, properties: { reasonString: why } },
            { protocolVersion: 5 },
          )
        : mqtt.generate({ cmd: 'connack', returnCode: rc3, sessionPresent: false }),
    )
    this.close(`connect refused: ${why}`)
  }

  // ---- PUBLISH

  private onPublish(p: AnyPacket): void {
    const v5 = this.version === 5
    const qos: number = p.qos
    const pid: number = p.messageId ?? 0
    if (v5 && p.properties) {
      // [MQTT-3.3.2-8] we announced Topic Alias Maximum 0: any alias is invalid.
      if (p.properties.topicAlias !== undefined)
        return this.protocolError(RC.topicAliasInvalid, 'topic aliases are not supported')
    }
    // [MQTT-3.3.1-?] Retain Available is 0 in our CONNACK: a v5 retained publish is a protocol error (0x9A).
    if (v5 && p.retain) return this.protocolError(RC.retainNotSupported, 'retain is not supported')
    if (qos === 2 && this.qos2?.has(pid)) {
      // [MQTT-4.3.3-?] a resent QoS 2 PUBLISH before PUBREL is the same message: PUBREC again, store once.
      return this.writePubrec(pid, RC.success)
    }
    if (qos > 0) {
      this.inflight++
      // [MQTT-3.3.4-9] v5: more unacknowledged publishes than our Receive Maximum is a protocol error.
      if (v5 && this.inflight > this.gw.opts.receiveMaximum) {
        return this.protocolError(RC.receiveMaximumExceeded, 'receive maximum exceeded')
      }
      if (!v5 && this.inflight >= V3_INFLIGHT_PAUSE) this.pause()
    }
    const topic: string = p.topic
    const payload: Buffer = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload
    if (topic !== this.telemetryTopic) {
      const kind = classifyPublish(this.deviceId, topic)
      const reason: QuarantineReason = kind === 'forbidden' ? 'forbidden_topic' : 'unknown_topic'
      const detail =
        kind === 'forbidden'
          ? `device ${this.deviceId} may only publish under ${devicePrefix(this.deviceId)}`
          : `unknown topic ${topic}; telemetry goes to ${this.telemetryTopic}`
      return this.refusePublish(
        qos,
        pid,
        topic,
        payload,
        reason,
        detail,
        kind === 'forbidden' ? RC.notAuthorized : RC.topicNameInvalid,
      )
    }
    const parsed = judgePayload(payload)
    const count = parsed.valid + parsed.rejections.length
    this.gw.countReceived(this.transport, count)
    if (v5 && qos > 0 && parsed.valid === 0) {
      // Nothing in it can be stored: refused like HTTP's 400, with 0x99 Payload format invalid, and kept in
      // the quarantine as not acknowledged. A payload with some valid readings is accepted (success ack),
      // its bad readings quarantined, as HTTP answers 202: a 0x99 would tell the device nothing was taken.
      const first = parsed.rejections[0]
      return this.refusePublish(qos, pid, topic, payload, first.reason, first.detail, RC.payloadFormatInvalid)
    }
    const env: Envelope = {
      id: envelopeId('m'),
      deviceId: this.deviceId,
      transport: this.transport,
      topic,
      receivedAt: Date.now(),
      payload,
    }
    let token = pid
    if (qos === 2) token |= TOKEN_QOS2
    if (parsed.rejections.length > 0) {
      this.gw.log.info(
        { deviceId: this.deviceId, reason: parsed.rejections[0].reason, detail: parsed.rejections[0].detail },
        'invalid readings quarantined',
      )
    }
    try {
      this.gw.queue.enqueue(env, qos === 0 ? this.gw.qos0Sink(this.transport) : this, token, count)
    } catch (err) {
      // The disk budget is spent: never accept what we cannot keep. [MQTT-3.4.2.1] 0x97 Quota exceeded.
      this.gw.log.warn(
        { deviceId: this.deviceId, err: (err as Error).message },
        'the queue refused the publish (full or unreachable); disconnecting',
      )
      // [MQTT-3.14.2.1] DISCONNECT 0x89 Server busy when the queue itself is unreachable.
      const full = (err as { code?: string }).code === 'IOT_ERR_QUEUE_FULL'
      this.disconnect(full ? RC.quotaExceeded : RC.serverBusy, (err as Error).message)
    }
  }

  private refusePublish(
    qos: number,
    pid: number,
    topic: string,
    payload: Buffer,
    reason: QuarantineReason,
    detail: string,
    rc: number,
  ): void {
    this.gw.log.info({ deviceId: this.deviceId, topic, reason }, 'publish refused')
    quarantineRefused(
      this.gw.queue,
      this.gw.metrics,
      this.deviceId,
      this.transport,
      payload,
      reason,
      detail,
      topic,
    )
    if (this.version === 5 && qos > 0) {
      // v5 can refuse one message and keep the connection: PUBACK/PUBREC with the reason.
      this.inflight--
      const props = { reasonString: detail }
      this.write(
        mqtt.generate(
          { cmd: qos === 1 ? 'puback' : 'pubrec', messageId: pid, reasonCode: rc, properties: props },
          { protocolVersion: 5 },
        ),
      )
      return
    }
    // v3.1.1 has no negative ack, and acking would claim a message we did not take: close instead.
    this.protocolError(rc, detail)
  }

  private tooLarge(size: number, type: number): void {
    const detail = `packet of ${size} bytes; the limit is ${this.gw.maxPacketSize}`
    if (this.state === ConnState.connected && type === PacketType.publish) {
      quarantineRefused(
        this.gw.queue,
        this.gw.metrics,
        this.deviceId,
        this.transport,
        Buffer.alloc(0),
        'payload_too_large',
        detail,
      )
    }
    this.gw.log.info({ deviceId: this.deviceId || undefined, size }, 'packet too large')
    // [MQTT-3.1.2-24 v5: 4.13] a packet over Maximum Packet Size: DISCONNECT 0x95, then close.
    this.protocolError(RC.packetTooLarge, detail)
  }

  private onPubrel(p: AnyPacket): void {
    const pid: number = p.messageId ?? 0
    const known = this.qos2?.delete(pid) ?? false
    // [MQTT-4.3.3-11] PUBCOMP for the PUBREL; v5 says 0x92 if the id is unknown.
    this.write(
      this.version === 5 && !known
        ? mqtt.generate(
            { cmd: 'pubcomp', messageId: pid, reasonCode: RC.packetIdentifierNotFound },
            { protocolVersion: 5 },
          )
        : Buffer.from([0x70, 0x02, pid >> 8, pid & 0xff]),
    )
  }

  // ---- durable acks (AckSink)

  cork(): void {
    this.acks ??= []
  }

  ack(token: number, count: number, err: Error | undefined): void {
    if (this.state === ConnState.closed) return
    if (err) {
      this.disconnect(RC.serverBusy, err.message)
      return
    }
    this.inflight--
    this.ackedReadings += count
    if (this.acks !== null) this.acks.push(token)
    else this.writeAck(token)
  }

  uncork(): void {
    const acks = this.acks
    this.acks = null
    if (this.ackedReadings > 0) {
      this.gw.metrics.acked.inc({ transport: this.transport }, this.ackedReadings)
      this.ackedReadings = 0
    }
    if (acks === null || acks.length === 0 || this.state === ConnState.closed) return
    // Plain success acks are 4 bytes each: one buffer, one write for the whole commit.
    let plain = 0
    for (const t of acks) if (t >>> TOKEN_REASON_SHIFT === 0 && (t & TOKEN_QOS2) === 0) plain++
    if (plain === acks.length) {
      const buf = Buffer.allocUnsafe(plain * 4)
      let o = 0
      for (const t of acks) {
        buf[o] = 0x40
        buf[o + 1] = 0x02
        buf[o + 2] = (t >> 8) & 0xff
        buf[o + 3] = t & 0xff
        o += 4
      }
      this.write(buf)
    } else {
      this.wire.cork()
      for (const t of acks) this.writeAck(t)
      process.nextTick(() => this.wire.uncork())
    }
    // Connected, `pending` can only hold the start of a packet whose rest is still unread: resume even so,
    // or that packet (and the connection) would wait forever.
    if (this.paused && this.inflight < V3_INFLIGHT_PAUSE / 2) this.resume()
  }

  private writeAck(token: number): void {
    const pid = token & 0xffff
    const rc = token >>> TOKEN_REASON_SHIFT
    if (token & TOKEN_QOS2) {
      // [MQTT-4.3.3-?] a PUBREC with a reason code >= 0x80 ends the flow: no PUBREL is expected.
      if (rc < 0x80) (this.qos2 ??= new Set()).add(pid)
      return this.writePubrec(pid, rc)
    }
    if (rc === 0) this.write(Buffer.from([0x40, 0x02, pid >> 8, pid & 0xff]))
    else this.write(mqtt.generate({ cmd: 'puback', messageId: pid, reasonCode: rc }, { protocolVersion: 5 }))
  }

  private writePubrec(pid: number, rc: number): void {
    if (rc === 0) this.write(Buffer.from([0x50, 0x02, pid >> 8, pid & 0xff]))
    else this.write(mqtt.generate({ cmd: 'pubrec', messageId: pid, reasonCode: rc }, { protocolVersion: 5 }))
  }

  // ---- SUBSCRIBE

  private onSubscribe(p: AnyPacket): void {
    const v5 = this.version === 5
    const granted: number[] = []
    for (const s of p.subscriptions as Array<{ topic: string; qos: number }>) {
      if (subscriptionAllowed(this.deviceId, s.topic)) {
        // Commands are delivered at most at QoS 1.
        const qos = Math.min(s.qos, 1)
        ;(this.subs ??= new Map()).set(s.topic, qos)
        granted.push(qos)
      } else {
        this.gw.log.info({ deviceId: this.deviceId, filter: s.topic }, 'subscription refused')
        // [MQTT-3.9.3] 0x80 failure in v3.1.1; v5 says why.
        granted.push(v5 ? RC.notAuthorized : 0x80)
      }
    }
    this.saveSession()
    this.write(
      mqtt.generate({ cmd: 'suback', messageId: p.messageId, granted }, { protocolVersion: this.version }),
    )
  }

  private saveSession(): void {
    if (this.sessionExpiry > 0)
      this.gw.sessions?.save(this.clientId!, this.deviceId, this.subs ?? new Map(), this.sessionExpiry)
  }

  private onUnsubscribe(p: AnyPacket): void {
    const codes: number[] = []
    for (const t of p.unsubscriptions as string[]) {
      codes.push(this.subs?.delete(t) ? RC.success : RC.noSubscriptionExisted)
    }
    this.saveSession()
    this.write(
      mqtt.generate(
        this.version === 5
          ? { cmd: 'unsuback', messageId: p.messageId, granted: codes }
          : ({ cmd: 'unsuback', messageId: p.messageId } as AnyPacket),
        { protocolVersion: this.version },
      ),
    )
  }

  // ---- flow control and closing

  private pause(): void {
    if (!this.paused) {
      this.paused = true
      this.wire.pause()
    }
  }

  private resume(): void {
    if (this.paused) {
      this.paused = false
      this.wire.resume()
    }
  }

  private write(buf: Buffer): void {
    if (this.state !== ConnState.closed && this.wire.writable) this.wire.write(buf)
  }

  timeout(why: string): void {
    this.gw.log.info({ deviceId: this.deviceId || undefined, why }, 'MQTT connection timed out')
    this.disconnect(RC.keepAliveTimeout, why)
  }

  /** A protocol violation: v5 gets a DISCONNECT with the reason before the close [MQTT-4.13.1-1]. */
  private protocolError(rc: number, why: string): void {
    this.gw.log.info(
      { deviceId: this.deviceId || undefined, reasonCode: rc, why },
      'MQTT protocol error; closing',
    )
    this.disconnect(rc, why)
  }

  /** Server-initiated close; v5 clients past CONNECT are told why. */
  disconnect(rc: number, why: string): void {
    if (this.state === ConnState.closed) return
    if (this.version === 5 && this.state === ConnState.connected) {
      this.write(
        mqtt.generate(
          { cmd: 'disconnect', reasonCode: rc, properties: { reasonString: why.slice(0, 200) } },
          { protocolVersion: 5 },
        ),
      )
    }
    this.close(why)
  }

  private close(why: string, graceful = false): void {
    if (this.state === ConnState.closed) return
    if (!graceful && this.deviceId)
      this.gw.log.debug({ deviceId: this.deviceId, why }, 'MQTT connection closed')
    this.teardown(graceful)
    this.wire.end()
    // Give the last packet a moment to leave, then make sure the socket is gone.
    setTimeout(() => this.wire.destroy(), 1000).unref()
  }

  private teardown(_graceful: boolean): void {
    if (this.state === ConnState.closed) return
    const wasConnected = this.state === ConnState.connected
    this.state = ConnState.closed
    this.pending = null
    this.gw.closed(this)
    if (wasConnected && this.sessionExpiry > 0) this.gw.sessions?.touch(this.clientId!, this.sessionExpiry)
    // [MQTT-3.1.2-8] the will is published when the connection closes without a normal DISCONNECT.
    if (wasConnected && this.will) {
      const will = this.will
      this.will = null
      const payload = typeof will.payload === 'string' ? Buffer.from(will.payload) : will.payload
      const parsed = judgePayload(payload)
      const count = parsed.valid + parsed.rejections.length
      this.gw.countReceived(this.transport, count)
      try {
        this.gw.queue.enqueue(
          {
            id: envelopeId('m'),
            deviceId: this.deviceId,
            transport: this.transport,
            topic: will.topic,
            receivedAt: Date.now(),
            payload,
          },
          new MetricsSink(this.gw.metrics, this.transport),
          0,
          count,
        )
      } catch (err) {
        this.gw.log.warn(
          { deviceId: this.deviceId, err: (err as Error).message },
          'will message dropped: queue full',
        )
      }
    }
  }
}

const PINGRESP = Buffer.from([0xd0, 0x00])
const EMPTY = Buffer.alloc(0)

/** QoS 0: nothing to acknowledge, but the readings still count as accepted once durable. */
class MetricsSink implements AckSink {
  private n = 0
  constructor(
    private readonly metrics: Metrics,
    private readonly transport: Transport,
  ) {}
  cork(): void {}
  ack(_t: number, count: number, err: Error | undefined): void {
    if (!err) this.n += count
  }
  uncork(): void {
    if (this.n > 0) this.metrics.acked.inc({ transport: this.transport }, this.n)
    this.n = 0
  }
}
