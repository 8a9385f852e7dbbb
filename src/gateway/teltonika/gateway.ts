import { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import type { Metrics } from '../../metrics/index.js'
import type { AckSink, Envelope, Queue } from '../../queue/types.js'
import { type QuarantineReason, judgePayload } from '../../readings/index.js'
import { envelopeId, quarantineRefused } from '../accept.js'
import type { Certificates } from '../../lib/tls.js'
import type { CommandChannel, CommandEvents, OutboundCommand } from '../commands.js'
import { type Listener, listen } from '../listen.js'
import { MetricsSink } from '../mqtt/acks.js'
import { type AvlRecord, MAX_DATA_LENGTH, type TcpScan } from './codec.js'
import { ConnState, TeltonikaConnection } from './connection.js'
import { type ReadingsJson, avlReadings, messageReading } from './readings.js'
import { Refusals } from '../refusals.js'
import { TeltonikaUdp } from './udp.js'

/** How often deadlines are checked and passed refusal windows forgotten: one timer for all connections. */
const SWEEP_INTERVAL_MS = 1000
/** Tries at a port number free for both TCP and UDP, when the configured port is 0 (any). */
const BIND_TRIES = 5
/**
 * Seconds of silence after which the kernel probes a connection, so a tracker that vanished (out of coverage,
 * powered off, its carrier's NAT gone) is found and closed. Nothing else closes an idle connection: an idle
 * Teltonika connection is normal (the device keeps it open for commands, [TDSP Codec 12 / Communication with
 * server] recommends the longest Open Link Timeout), and the device's own pings (0xFF) are optional.
 */
const KEEPALIVE_MS = 60_000

export interface TeltonikaOptions {
  host: string
  port: number
  /** Seconds a device has to complete its handshake, or a packet it began (IOTCORE_TELTONIKA_TIMEOUT). */
  timeoutSeconds: number
  /**
   * The platform's certificate: the TCP listener then takes TLS and plain TCP (gateway/listen.ts). UDP stays plain:
   * Teltonika's DTLS is not offered.
   */
  tls?: Certificates
}

/**
 * The Teltonika gateway: TCP (the IMEI handshake, then AVL packets acked with their record count after the
 * durable append) and UDP on the same port number, and Codec 12 commands to the devices connected here
 * (CommandChannel). connection.ts reads one TCP device, udp.ts the datagrams, codec.ts the bytes.
 *
 * Unlike Traccar's decoder, which acks what it reads, a packet is checked against its CRC first: a corrupted
 * packet is never stored nor acked (the device sends it again), and it is quarantined with its bytes.
 */
export class TeltonikaGateway implements CommandChannel {
  readonly transport = 'teltonika' as const
  readonly connections = new Set<TeltonikaConnection>()
  /** The connection each device authenticated last: where its commands go. */
  private readonly byDevice = new Map<string, TeltonikaConnection>()
  readonly refusals = new Refusals()
  /** @internal One scan result reused by every connection's framing. */
  readonly scan: TcpScan = { kind: 0, end: 0, length: 0 }
  readonly timeoutMs: number
  readonly maxDataLength = MAX_DATA_LENGTH
  private listener: Listener | undefined
  private readonly udp: TeltonikaUdp
  private sweepTimer: NodeJS.Timeout | undefined
  private stopping = false
  /** Readings received, counted as a plain number and handed to prom-client when it collects. */
  private received = 0
  private readonly connectListeners = new Set<(deviceId: string) => void>()
  /** Codec 12 and 13 messages are not acknowledged ([TDSP Codec 12]); their readings count once durable. */
  private readonly unacked: AckSink
  private unwatch: (() => void) | undefined
  port = 0

  constructor(
    readonly opts: TeltonikaOptions,
    readonly queue: Queue,
    readonly credentials: CredentialCache,
    readonly metrics: Metrics,
    readonly log: Logger,
  ) {
    this.timeoutMs = opts.timeoutSeconds * 1000
    this.udp = new TeltonikaUdp(this)
    this.unacked = new MetricsSink(metrics, 'teltonika')
    metrics.beforeCollect.push(() => {
      if (this.received > 0) metrics.received.inc({ transport: 'teltonika' }, this.received)
      this.received = 0
    })
  }

  /** Whether the TCP listener and the UDP socket are bound (the service checks watch them). */
  get listening(): boolean {
    return (this.listener?.listening ?? false) && this.udp.port > 0
  }

  /** The UDP socket's port: the TCP port's number. */
  get udpPort(): number {
    return this.udp.port
  }

  async start(): Promise<void> {
    this.unwatch = this.credentials.watch((ids) => this.revokeStale(ids))
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS)
    this.sweepTimer.unref()
    const { host, port, tls } = this.opts
    for (let attempt = 1; ; attempt++) {
      // Plain TCP too with a certificate: many trackers cannot do TLS, and must not stop working when an
      // operator turns it on.
      const tcp = await listen(
        { host, port, tls, plainToo: true, name: 'Teltonika (TCP)', log: this.log },
        (socket) => this.accept(socket),
      )
      try {
        await this.udp.bind(host, tcp.port)
        this.listener = tcp
        this.port = tcp.port
        break
      } catch (err) {
        await tcp.close()
        // Port 0 picked a number some other program holds for UDP: pick again.
        if (this.opts.port !== 0 || attempt === BIND_TRIES) throw err
      }
    }
    this.log.info({ port: this.port }, 'Teltonika UDP listening on the TCP port number')
  }

  /** Stops accepting and closes every connection; commands outstanding on them are reported failed. */
  async stop(): Promise<void> {
    this.stopping = true
    this.unwatch?.()
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    const closed = this.listener?.close() ?? Promise.resolve()
    for (const c of [...this.connections]) c.close('server shutting down')
    await Promise.all([closed, this.udp.close()])
  }

  health() {
    return {
      ok: this.port > 0 && this.udp.port > 0,
      tls: this.listener?.accepts ?? 'plain',
      connections: this.connections.size,
      refused: this.refusals.refused,
      limited: this.refusals.limited,
    }
  }

  /**
   * Serves one connection: a TCP socket, a TLS one, or any duplex stream of a device's bytes (its
   * `remoteAddress`, if it has one, is what refusals are counted against). Undefined if it was closed at once.
   */
  accept(wire: Duplex & { remoteAddress?: string }): TeltonikaConnection | undefined {
    if (this.stopping || this.refusals.limit(wire.remoteAddress ?? '')) {
      wire.destroy()
      return undefined
    }
    if (wire instanceof Socket) wire.setKeepAlive(true, KEEPALIVE_MS)
    const c = new TeltonikaConnection(this, wire)
    this.connections.add(c)
    return c
  }

  // ---- CommandChannel

  send(cmd: OutboundCommand, events: CommandEvents): boolean {
    const c = this.byDevice.get(cmd.deviceId)
    return c?.command(cmd, events) ?? false
  }

  onConnect(fn: (deviceId: string) => void): () => void {
    this.connectListeners.add(fn)
    return () => this.connectListeners.delete(fn)
  }

  // ---- called by connections and the UDP socket

  /** @internal A device completed its handshake: it takes over an older connection of the same device. */
  authenticated(c: TeltonikaConnection): void {
    const old = this.byDevice.get(c.deviceId)
    this.byDevice.set(c.deviceId, c)
    if (old && old !== c) old.close('another connection of the same device took over')
    for (const fn of this.connectListeners) {
      try {
        fn(c.deviceId)
      } catch (err) {
        this.log.error({ err }, 'a Teltonika connect listener failed')
      }
    }
  }

  /** @internal */
  closed(c: TeltonikaConnection): void {
    this.connections.delete(c)
    if (this.byDevice.get(c.deviceId) === c) this.byDevice.delete(c.deviceId)
  }

  /** @internal An unknown IMEI or a handshake that is not one, counted against its address. */
  refused(address: string, why: string, imei?: string): void {
    if (this.refusals.refuse(address)) {
      this.log.warn(
        { address, windowSeconds: 60 },
        'Teltonika refusals from this address reached the limit: its connections are closed unread for the rest of the window',
      )
    }
    this.log.info({ address, imei, why }, 'Teltonika device refused')
  }

  /** @internal The readings of one AVL packet as one envelope. */
  avlEnvelope(deviceId: string, buf: Uint8Array, records: readonly AvlRecord[]): Envelope {
    return this.envelope(deviceId, avlReadings(buf, records), records.length)
  }

  /**
   * Readings as one envelope of reading JSON. Those not plainly valid by construction are judged by the one
   * rule (readings/index.ts) here, as the ingest will. Every record is acked, the ones the rule refuses included
   * (coordinates out of range, too many values): they are kept in the quarantine, and a record left unacked
   * would be sent again forever.
   */
  private envelope(deviceId: string, readings: ReadingsJson, count: number): Envelope {
    const payload = Buffer.from(readings.json)
    this.received += count
    const env: Envelope = {
      id: envelopeId('t'),
      deviceId,
      transport: 'teltonika',
      receivedAt: Date.now(),
      payload,
    }
    if (readings.plain) env.allValid = true
    else {
      const judged = judgePayload(payload)
      if (judged.rejections.length === 0) env.allValid = true
      else {
        const { reason, detail } = judged.rejections[0]
        this.log.info({ deviceId, reason, detail }, 'invalid Teltonika readings quarantined')
      }
    }
    return env
  }

  /** @internal Appends durably; throws when the queue refuses (full or unreachable). */
  enqueue(env: Envelope, sink: AckSink, token: number, count: number): void {
    this.queue.enqueue(env, sink, token, count)
  }

  /** @internal A TCP packet's records; false if the queue refused them (the connection is then closed). */
  appendAvl(c: TeltonikaConnection, buf: Uint8Array, records: readonly AvlRecord[]): boolean {
    try {
      this.enqueue(this.avlEnvelope(c.deviceId, buf, records), c, 0, records.length)
      return true
    } catch (err) {
      // Not acked: the device sends them again, here once the queue has room, or on its next connection.
      this.log.warn(
        { deviceId: c.deviceId, err: (err as Error).message },
        'Teltonika packet not queued; closing',
      )
      c.close('the queue refused the packet')
      return false
    }
  }

  /** @internal A Codec 12 or 13 message kept as a reading (no ack exists for it). */
  appendMessage(c: TeltonikaConnection, text: string, bytes: Uint8Array, ts: number): void {
    try {
      this.enqueue(this.envelope(c.deviceId, messageReading(text, bytes, ts), 1), this.unacked, 0, 1)
    } catch (err) {
      this.log.warn({ deviceId: c.deviceId, err: (err as Error).message }, 'Teltonika message not queued')
    }
  }

  /** @internal A packet whose CRC does not match: not acked, so the device sends it again; kept, counted. */
  badCrc(c: TeltonikaConnection, raw: Buffer): void {
    this.log.info({ deviceId: c.deviceId, bytes: raw.length }, 'Teltonika packet with a bad CRC: not acked')
    this.quarantine(
      c.deviceId,
      raw,
      'bad_crc',
      `the CRC-16 does not match the packet's ${raw.length} bytes; not acknowledged`,
    )
  }

  /** @internal A packet or frame that breaks the protocol, from a connection about to be closed. */
  malformed(c: TeltonikaConnection, raw: Buffer, why: string): void {
    this.malformedFrom(c.deviceId, 'tcp', raw, why)
  }

  /** @internal */
  malformedFrom(deviceId: string, over: 'tcp' | 'udp', raw: Buffer, why: string): void {
    this.log.info({ deviceId, over, why }, 'malformed Teltonika packet: not acked')
    this.quarantine(deviceId, raw, 'malformed_packet', `${why}; not acknowledged`)
  }

  private quarantine(deviceId: string, raw: Buffer, reason: QuarantineReason, detail: string): void {
    quarantineRefused(this.queue, this.metrics, deviceId, 'teltonika', raw, reason, detail)
  }

  /** The credentials of these devices changed: a deleted or retired device (or one whose IMEI changed) is cut. */
  private revokeStale(ids: readonly string[]): void {
    for (const id of ids) {
      const c = this.byDevice.get(id)
      if (c && this.credentials.current(id)?.imei !== c.imei)
        c.close('the device was deleted or its IMEI changed')
    }
  }

  private sweep(): void {
    const now = Date.now()
    for (const c of this.connections) {
      if (c.deadline > 0 && now > c.deadline && !c.isPaused && c.state !== ConnState.closed) c.timeout()
    }
    this.refusals.sweep(now)
  }
}
