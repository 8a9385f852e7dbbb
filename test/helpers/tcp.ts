/**
 * A raw TCP test client for the line and signal protocols: writes whatever bytes a test wants, keeps every byte
 * the server sends, and waits for conditions with a liveness bound (never a timing assertion).
 */
import { type Socket, connect } from 'node:net'

/** How long a test waits for something the gateway should do: a liveness bound, not a timing assertion. */
export const LIVENESS_MS = 15_000

export class TcpClient {
  /** Every byte the server sent. */
  data = Buffer.alloc(0)
  /** The server ended (FIN), closed or reset the connection. */
  closed = false
  /** Lines already handed out by nextLine. */
  private taken = 0
  private wake: (() => void) | undefined
  /** Called with each chunk as it arrives, before anything else runs. */
  onData: ((chunk: Buffer) => void) | undefined

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.onData?.(d)
      this.data = Buffer.concat([this.data, d])
      this.notify()
    })
    socket.on('error', () => {})
    const gone = () => {
      this.closed = true
      this.notify()
    }
    // The server's FIN ends the exchange; our side then closes too, as a device's would.
    socket.on('end', () => {
      socket.end()
      gone()
    })
    socket.on('close', gone)
  }

  /** Connects to 127.0.0.1:port, from `localAddress` if given (any of 127.0.0.0/8 reaches it on Linux). */
  static open(port: number, localAddress?: string): Promise<TcpClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, localAddress, noDelay: true, allowHalfOpen: true }, () => {
        s.off('error', reject)
        resolve(new TcpClient(s))
      })
      s.once('error', reject)
    })
  }

  write(bytes: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes)
  }

  /** Ends our side (a FIN); the server may still answer. */
  end(): void {
    this.socket.end()
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** The complete lines the server sent so far. */
  lines(): string[] {
    const text = this.data.toString('utf8')
    return text
      .slice(0, text.lastIndexOf('\n') + 1)
      .split('\n')
      .slice(0, -1)
  }

  /** Waits until `cond` holds or the connection closes; false if neither happened within `ms`. */
  async until(cond: () => boolean, ms = LIVENESS_MS): Promise<boolean> {
    const deadline = Date.now() + ms
    while (!cond() && !this.closed) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(t)
          resolve()
        }
      })
    }
    return true
  }

  /** The next line from the server, parsed as JSON; rejects if none comes (the connection closed, or in time). */
  async nextLine(ms = LIVENESS_MS): Promise<any> {
    await this.until(() => this.lines().length > this.taken, ms)
    const lines = this.lines()
    if (lines.length <= this.taken)
      throw new Error(
        this.closed ? 'connection closed before a line came' : 'no line from the server in time',
      )
    return JSON.parse(lines[this.taken++])
  }

  /** Waits for the server to close the connection; rejects if it does not within the bound. */
  async waitClosed(ms = LIVENESS_MS): Promise<void> {
    await this.until(() => false, ms)
    if (!this.closed) throw new Error('the server did not close the connection')
  }

  private notify(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }
}
