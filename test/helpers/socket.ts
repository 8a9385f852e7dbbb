/**
 * What the raw test clients (tcp.ts, mqtt-raw.ts, teltonika.ts) share: a socket that keeps every byte the
 * server sends, knows when the server ended it, and waits for a condition with a liveness bound (never a timing
 * assertion).
 */
import type { Socket } from 'node:net'

/** How long a test waits for something the gateway should do: a liveness bound, not a timing assertion. */
export const LIVENESS_MS = 15_000

/**
 * Resolves with `make(socket)` once `socket` is connected (its 'connect', or 'secureConnect' for TLS), so the
 * client's listeners are on it before any byte arrives; rejects with the socket's error if it fails first.
 */
export function onceConnected<T>(socket: Socket, make: (s: Socket) => T, secure = false): Promise<T> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      socket.off('error', reject)
      resolve(make(socket))
    })
  })
}

export class RawSocket {
  /** Every byte the server sent. */
  data = Buffer.alloc(0)
  /** The server ended (FIN), closed or reset the connection. */
  closed = false
  private wake: (() => void) | undefined

  /** `endToo`: answer the server's FIN with ours, as a device on a half-open socket would. */
  protected constructor(
    readonly socket: Socket,
    endToo = false,
  ) {
    socket.on('data', (d: Buffer) => {
      this.arrived(d)
      this.data = Buffer.concat([this.data, d])
      this.notify()
    })
    socket.on('error', () => {})
    const gone = () => {
      this.closed = true
      this.notify()
    }
    socket.on('end', () => {
      if (endToo) socket.end()
      gone()
    })
    socket.on('close', gone)
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

  /** Waits for the server to close the connection; rejects if it does not within the bound. */
  async waitClosed(ms = LIVENESS_MS): Promise<void> {
    await this.until(() => false, ms)
    if (!this.closed) throw new Error('the server did not close the connection')
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** Each chunk as it arrives, before it is kept. */
  protected arrived(_chunk: Buffer): void {}

  private notify(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }
}
