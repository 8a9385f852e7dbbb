import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import type { Certificates } from '../../lib/tls.js'
import type { Metrics } from '../../metrics/index.js'
import type { Queue } from '../../queue/types.js'
import { closeWithin, type Listener, listen } from '../listen.js'
import { RefusedPeers, WINDOW_MS } from '../refusals.js'
import { JsonlConnection, LineState, errorLine } from './connection.js'

/** How long a connection may take over what it must do; each says why in the log and in its last line. */
export const JSONL_LIMITS = {
  /** For its first line: a device that connects knows its credentials. */
  authMs: 10_000,
  /** For a line, from its first byte to its end: a full-size line (256 KiB) at 5 KiB/s, a slow cellular link. */
  lineMs: 60_000,
  /**
   * Silence after which a connection is closed: past an hour, longer than most carriers' NATs keep a silent
   * TCP connection, one is more likely dead than quiet, and it holds memory and a file descriptor.
   */
  idleMs: 3_600_000,
  /** Closing, for its last answers to go out and the sender to close its side, before it is cut. */
  closeMs: 5_000,
} as const

/** How often timeouts are looked for: one timer for all connections. */
const SWEEP_MS = 1000

export interface JsonlGatewayOptions {
  host: string
  port: number
  /** The longest line. */
  maxPayloadBytes: number
  /** The platform's certificate: the listener then takes TLS only (gateway/listen.ts). */
  tls?: Certificates
}

/**
 * The JSON-lines listener (connection.ts): for simple devices and scripts, `nc` and `openssl s_client`
 * included; TLS with the platform's certificate. One sweep timer for every connection's timeouts; connections
 * cut when their device's credential is revoked.
 */
export class JsonlGateway {
  private listener: Listener | undefined
  readonly connections = new Set<JsonlConnection>()
  readonly peers: RefusedPeers
  /** The timeouts in force (JSONL_LIMITS). */
  readonly limits: { -readonly [K in keyof typeof JSONL_LIMITS]: number } = { ...JSONL_LIMITS }
  /** The sweep's clock, stamped on what a connection reads instead of a Date.now() call per chunk. */
  now = Date.now()
  port = 0
  private timer: NodeJS.Timeout | undefined
  private unwatch: (() => void) | undefined
  private stopping = false
  private received = 0

  constructor(
    readonly opts: JsonlGatewayOptions,
    readonly queue: Queue,
    readonly credentials: CredentialCache,
    readonly metrics: Metrics,
    readonly log: Logger,
  ) {
    this.peers = new RefusedPeers('jsonl', metrics, log)
    metrics.beforeCollect.push(() => {
      if (this.received > 0) metrics.received.inc({ transport: 'jsonl' }, this.received)
      this.received = 0
    })
  }

  async start(): Promise<void> {
    this.unwatch = this.credentials.watch((ids) => this.revokeStale(ids))
    this.timer = setInterval(() => this.sweep(), SWEEP_MS)
    this.timer.unref()
    const { host, port, tls } = this.opts
    // Half-open: a sender that ends its side after its last line (`nc -N`) still gets every answer. With a
    // certificate, plain TCP too on the same port (a line's first byte is never a TLS handshake's), as
    // Teltonika's: scripts and devices without TLS keep working.
    const opts = { host, port, tls, plainToo: true, allowHalfOpen: true, name: 'JSON lines', log: this.log }
    this.listener = await listen(opts, (socket) => this.accept(socket))
    this.port = this.listener.port
  }

  /** Stops accepting; each connection answers the lines it took, then closes (cut after closeWithin's grace). */
  async stop(): Promise<void> {
    this.stopping = true
    this.unwatch?.()
    if (this.timer) clearInterval(this.timer)
    const closed = this.listener?.close() ?? Promise.resolve()
    for (const c of this.connections) c.finish()
    await closeWithin(closed, () => {
      for (const c of this.connections) c.destroy()
    })
  }

  /** Whether it is bound (the service checks watch it). */
  get listening(): boolean {
    return this.listener?.listening ?? false
  }

  health() {
    return {
      ok: this.port > 0,
      tls: this.listener?.accepts ?? 'plain',
      connections: this.connections.size,
      ...this.peers.health(),
    }
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy()
      return
    }
    const address = socket.remoteAddress ?? ''
    // Told to come back after at most the window's length: the address's window began at its first refusal.
    if (this.peers.limit(address))
      return refuse(socket, errorLine('IOT_ERR_RATE_LIMITED', [address, WINDOW_MS / 1000]))
    this.connections.add(new JsonlConnection(this, socket))
  }

  /** @internal Counted as a plain number per line; handed to prom-client when it collects. */
  countReceived(n: number): void {
    this.received += n
  }

  /** @internal */
  closed(c: JsonlConnection): void {
    this.connections.delete(c)
  }

  /** Connections whose device no longer holds the token hash they authenticated with are cut (as MQTT's). */
  private revokeStale(ids: readonly string[]): void {
    const changed = new Set(ids)
    for (const c of this.connections) {
      if (c.state !== LineState.open || !changed.has(c.deviceId)) continue
      const now = this.credentials.current(c.deviceId)
      if (now?.tokenHash === c.tokenHash) continue
      c.revoke(now ? "the device's token was rotated; connect with the new one" : 'the device was deleted')
    }
  }

  private sweep(): void {
    const now = (this.now = Date.now())
    this.peers.sweep()
    const { authMs, lineMs, idleMs, closeMs } = this.limits
    for (const c of this.connections) {
      if (c.state === LineState.hello || c.state === LineState.auth) {
        if (now - c.openedAt > authMs) c.timeout(`no authentication line within ${authMs / 1000} s`)
      } else if (c.state === LineState.open) {
        if (c.reader.since > 0 && !c.paused && now - c.reader.since > lineMs)
          c.timeout(`a line was not finished within ${lineMs / 1000} s of its first byte`)
        else if (now - c.lastActivity > idleMs) c.timeout(`nothing sent for ${idleMs / 1000} s`)
      } else if (c.state === LineState.closing && now - c.closingSince > closeMs) c.destroy()
    }
  }
}

/** Turns a connection away unread with one line saying why. */
function refuse(socket: Socket, line: string): void {
  socket.on('error', () => {})
  // Read and dropped: unread bytes would turn the close into a reset that can lose the line.
  socket.resume()
  socket.end(line + '\n')
  setTimeout(() => socket.destroy(), JSONL_LIMITS.closeMs).unref()
}
