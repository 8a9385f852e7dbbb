import { type Socket, connect } from 'node:net'
import type { Sender } from './senders.js'

/**
 * A simulated device on a TCP connection of its own whose server answers what it is sent in order (Teltonika,
 * JSON lines): it connects and greets, sends what is queued once the greeting is accepted, takes the answers in
 * order, and after a lost connection connects again with backoff and sends what was not answered, first (the
 * same readings: the platform stores them once). One socket, two arrays and no promise per reading.
 */
export interface StreamEvents {
  acked(token: number): void
  refused(token: number, why: string): void
}

export interface Queued {
  token: number
  reading: Record<string, unknown>
}

const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 5000

export abstract class StreamDevice {
  private socket: Socket | undefined
  private closing = false
  private timer: NodeJS.Timeout | undefined
  private backoff = BACKOFF_MIN_MS
  /** The server accepted the greeting on this connection: readings go out. */
  protected open = false
  /** Sent on this connection and not answered yet, oldest first. */
  protected inflight: Queued[] = []
  /** Not sent yet. */
  protected queue: Queued[] = []

  constructor(
    private readonly host: string,
    private readonly port: number,
    protected readonly events: StreamEvents,
    /** Called each time the server accepts the greeting. */
    private readonly onOpen: () => void,
  ) {}

  get connected(): boolean {
    return this.open
  }

  get pending(): number {
    return this.inflight.length + this.queue.length
  }

  start(): void {
    if (this.closing) return
    const socket = connect({ host: this.host, port: this.port, noDelay: true })
    this.socket = socket
    socket.on('connect', () => socket.write(this.greeting()))
    socket.on('data', (d: Buffer) => {
      if (socket === this.socket && !socket.destroyed) this.received(d)
    })
    socket.on('error', () => {})
    socket.on('close', () => this.lost(socket))
  }

  send(token: number, reading: Record<string, unknown>): void {
    this.queue.push({ token, reading })
    this.flush()
  }

  close(): Promise<void> {
    this.closing = true
    clearTimeout(this.timer)
    const s = this.socket
    if (!s || s.destroyed) return Promise.resolve()
    return new Promise((resolve) => {
      s.once('close', () => resolve())
      s.end()
      setTimeout(() => s.destroy(), 1000).unref()
    })
  }

  /** The first bytes on every connection. */
  protected abstract greeting(): Buffer | string
  /** Bytes from the server: the greeting's answer, then answers to what was sent. */
  protected abstract received(data: Buffer): void
  /** Writes what is queued, as much as the protocol lets go before answers (called while open). */
  protected abstract write(socket: Socket): void
  /** Forgets what was half read on a connection that is gone. */
  protected abstract reset(): void

  protected flush(): void {
    if (this.open && this.socket && this.queue.length > 0) this.write(this.socket)
  }

  protected accepted(): void {
    this.open = true
    this.backoff = BACKOFF_MIN_MS
    this.onOpen()
    this.flush()
  }

  /** The server refused the greeting (an unknown IMEI, a bad token): tried again after the longest backoff. */
  protected turnedAway(): void {
    this.backoff = BACKOFF_MAX_MS
    this.socket?.destroy()
  }

  /** The `n` oldest readings sent were durably queued. */
  protected answered(n: number): void {
    const done = this.inflight.splice(0, n)
    for (const q of done) this.events.acked(q.token)
  }

  /** The oldest reading sent was refused for good (quarantined by the platform). */
  protected refusedFirst(why: string): void {
    const q = this.inflight.shift()
    if (q) this.events.refused(q.token, why)
  }

  /** An answer that makes no sense here: the connection starts over, and what it had sent goes again. */
  protected drop(): void {
    this.socket?.destroy()
  }

  private lost(socket: Socket): void {
    if (socket !== this.socket) return
    this.open = false
    this.reset()
    if (this.inflight.length > 0) {
      this.queue = this.inflight.concat(this.queue)
      this.inflight = []
    }
    if (this.closing) return
    this.timer = setTimeout(() => this.start(), this.backoff)
    this.timer.unref()
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS)
  }
}

/**
 * The Sender of a protocol with a connection per device: `make` builds device `i`, calling `onOpen` each time
 * its greeting is accepted; `connected` counts the devices that got through at least once.
 */
export function streamSender(count: number, make: (i: number, onOpen: () => void) => StreamDevice): Sender {
  let connected = 0
  const devices = Array.from({ length: count }, (_, i) => {
    let up = false
    return make(i, () => {
      if (!up) connected++
      up = true
    })
  })
  return {
    async start() {
      for (const d of devices) d.start()
    },
    send(device, token, reading) {
      devices[device].send(token, reading)
    },
    get pending() {
      return devices.reduce((n, d) => n + d.pending, 0)
    },
    get connected() {
      return connected
    },
    async stop() {
      await Promise.all(devices.map((d) => d.close()))
    },
  }
}
