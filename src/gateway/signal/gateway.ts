import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import { IotError } from '../../errors.js'
import type { Metrics } from '../../metrics/index.js'
import type { Queue } from '../../queue/types.js'
import { acceptDecoded, quarantineRefused } from '../accept.js'
import { closeWithin, type Listener, listen } from '../listen.js'
import { RefusedPeers } from '../refusals.js'
import { decodeSignal } from './decode.js'
import { NEED_MORE, NOT_AN_OBJECT, ObjectEnd, TOO_LARGE } from './scan.js'

/** How long a connection may take, and how long it may linger once closing; each says why in the log. */
export const SIGNAL_LIMITS = {
  /**
   * From the connection to the signal's last byte: their gateway writes a few hundred bytes at once, so ten
   * seconds is a dead or slow sender, whose socket is not held longer.
   */
  signalMs: 10_000,
  /** Closing, for the `1` to go out and the sender to close its side, before the socket is cut. */
  closeMs: 5_000,
} as const

/** How often timeouts are looked for: one timer for all connections. */
const SWEEP_MS = 1000

const Phase = { reading: 0, appending: 1, closing: 2 } as const
type Phase = (typeof Phase)[keyof typeof Phase]

/** One connection: one signal. */
interface SignalConnection {
  readonly socket: Socket
  readonly address: string
  readonly openedAt: number
  phase: Phase
  closingSince: number
  readonly scan: ObjectEnd
  /** The signal's bytes so far. */
  readonly parts: Buffer[]
}

export interface SignalGatewayOptions {
  host: string
  port: number
  maxPayloadBytes: number
}

/**
 * The founders' signal protocol (decode.ts) on its own port, so their device gateway can point here unchanged:
 * one JSON object per TCP connection, answered with the single byte `1` once the signal is durably queued (the
 * original answered before storing, and lost signals), then closed. A signal that is refused (an unknown
 * device, a bad value, too large, too slow) gets no `1`: the connection is closed, the reason logged, and an
 * authenticated device's signal quarantined as it was sent.
 */
export class SignalGateway {
  private listener: Listener | undefined
  readonly connections = new Set<SignalConnection>()
  private readonly peers: RefusedPeers
  /** The timeouts in force (SIGNAL_LIMITS). */
  readonly limits: { -readonly [K in keyof typeof SIGNAL_LIMITS]: number } = { ...SIGNAL_LIMITS }
  port = 0
  private timer: NodeJS.Timeout | undefined
  private stopping = false

  constructor(
    private readonly opts: SignalGatewayOptions,
    private readonly queue: Queue,
    private readonly credentials: CredentialCache,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.peers = new RefusedPeers('signal', metrics, log)
  }

  async start(): Promise<void> {
    this.timer = setInterval(() => this.sweep(), SWEEP_MS)
    this.timer.unref()
    // Plain TCP only: the founders' gateway has no TLS. Half-open: a sender that ends its side once it has
    // written the signal still gets its `1`.
    const { host, port } = this.opts
    const opts = { host, port, allowHalfOpen: true, name: 'signal', log: this.log }
    this.listener = await listen(opts, (socket) => this.accept(socket))
    this.port = this.listener.port
  }

  /** Stops accepting; signals being appended get their `1` (cut after closeWithin's grace), the others are closed. */
  async stop(): Promise<void> {
    this.stopping = true
    if (this.timer) clearInterval(this.timer)
    const closed = this.listener?.close() ?? Promise.resolve()
    for (const c of this.connections) if (c.phase === Phase.reading) this.close(c)
    await closeWithin(closed, () => {
      for (const c of this.connections) c.socket.destroy()
    })
  }

  /** Whether it is bound (the service checks watch it). */
  get listening(): boolean {
    return this.listener?.listening ?? false
  }

  health(): { ok: boolean; connections: number; refused: number; limited: number } {
    return { ok: this.port > 0, connections: this.connections.size, ...this.peers.health() }
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy()
      return
    }
    const c: SignalConnection = {
      socket,
      address: socket.remoteAddress ?? '',
      openedAt: Date.now(),
      phase: Phase.reading,
      closingSince: 0,
      scan: new ObjectEnd(this.opts.maxPayloadBytes),
      parts: [],
    }
    this.connections.add(c)
    socket.on('error', () => socket.destroy())
    socket.on('close', () => this.connections.delete(c))
    // The protocol has no way to say "refused" but the close: a flood is turned away unread.
    if (this.peers.limit(c.address)) return this.close(c)
    socket.on('data', (chunk: Buffer) => this.onData(c, chunk))
    socket.on('end', () => this.onEnd(c))
  }

  private onData(c: SignalConnection, chunk: Buffer): void {
    // Past the signal, what comes is read and dropped: unread, it would turn the close into a reset.
    if (c.phase !== Phase.reading) return
    const end = c.scan.feed(chunk)
    if (end === NEED_MORE) {
      c.parts.push(chunk)
      return
    }
    if (end === NOT_AN_OBJECT)
      return this.refuse(c, 'malformed', 'the stream does not start with a JSON object')
    if (end === TOO_LARGE)
      return this.refuse(c, 'too_large', `the signal is longer than ${this.opts.maxPayloadBytes} bytes`)
    c.parts.push(end === chunk.length ? chunk : chunk.subarray(0, end))
    c.phase = Phase.appending
    this.signal(c, Buffer.concat(c.parts)).catch((err) => {
      this.log.error({ err }, 'signal handling failed; closing')
      this.close(c)
    })
  }

  /** The sender ended its side before the signal was whole: nothing to answer. */
  private onEnd(c: SignalConnection): void {
    if (c.phase !== Phase.reading) return
    // A connection that sent nothing (a port check) is closed without a word in the log.
    if (!c.scan.begun && c.parts.length === 0) return this.close(c)
    this.refuse(c, 'malformed', 'the stream ended before the signal was complete')
  }

  private async signal(c: SignalConnection, raw: Buffer): Promise<void> {
    const receivedAt = Date.now()
    const d = decodeSignal(raw)
    if (d.imei === undefined) return this.refuse(c, 'malformed', d.ok ? '' : d.detail)
    const device = this.credentials.byImeiLookup(d.imei)
    if (device === undefined) {
      this.peers.refuse(c.address, 'unknown_device', d.imei)
      return this.close(c)
    }
    if (!d.ok) {
      this.log.info({ deviceId: device.id, reason: d.reason, detail: d.detail }, 'signal refused')
      quarantineRefused(this.queue, this.metrics, device.id, 'signal', raw, d.reason, d.detail)
      return this.close(c)
    }
    try {
      await acceptDecoded(this.queue, this.metrics, device.id, 'signal', d.reading, raw, receivedAt)
    } catch (err) {
      if (!(err instanceof IotError)) throw err
      this.log.info({ deviceId: device.id, code: err.code, detail: err.message }, 'signal refused')
      return this.close(c)
    }
    // Durably queued: now, and only now, the `1`.
    this.close(c, '1')
  }

  private refuse(c: SignalConnection, reason: 'malformed' | 'too_large' | 'timeout', why: string): void {
    this.peers.count(reason)
    this.log.info({ address: c.address, why }, 'signal refused')
    this.close(c)
  }

  /** Ends the connection, with `answer` if given; what the sender still writes is read and dropped. */
  private close(c: SignalConnection, answer?: string): void {
    if (c.phase === Phase.closing) return
    c.phase = Phase.closing
    c.closingSince = Date.now()
    c.parts.length = 0
    c.socket.resume()
    if (answer === undefined) c.socket.end()
    else c.socket.end(answer)
  }

  private sweep(): void {
    const now = Date.now()
    this.peers.sweep()
    const { signalMs, closeMs } = this.limits
    for (const c of this.connections) {
      if (c.phase === Phase.reading && now - c.openedAt > signalMs)
        this.refuse(c, 'timeout', `no complete signal within ${signalMs / 1000} s`)
      else if (c.phase === Phase.closing && now - c.closingSince > closeMs) c.socket.destroy()
    }
  }
}
