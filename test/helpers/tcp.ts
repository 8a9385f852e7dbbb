/**
 * A raw TCP test client for the line and signal protocols: writes whatever bytes a test wants, keeps every byte
 * the server sends, and waits for conditions with a liveness bound (never a timing assertion).
 */
import { connect } from 'node:net'
import { LIVENESS_MS, onceConnected, RawSocket } from './socket.js'

export class TcpClient extends RawSocket {
  /** Lines already handed out by nextLine. */
  private taken = 0
  /** Called with each chunk as it arrives, before anything else runs. */
  onData: ((chunk: Buffer) => void) | undefined

  protected override arrived(chunk: Buffer): void {
    this.onData?.(chunk)
  }

  /** Connects to 127.0.0.1:port, from `localAddress` if given (any of 127.0.0.0/8 reaches it on Linux). */
  static open(port: number, localAddress?: string): Promise<TcpClient> {
    // Half-open, and the server's FIN answered with ours: the FIN ends the exchange, as a device's would.
    const socket = connect({ host: '127.0.0.1', port, localAddress, noDelay: true, allowHalfOpen: true })
    return onceConnected(socket, (s) => new TcpClient(s, true))
  }

  write(bytes: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes)
  }

  /** Ends our side (a FIN); the server may still answer. */
  end(): void {
    this.socket.end()
  }

  /** The complete lines the server sent so far. */
  lines(): string[] {
    const text = this.data.toString('utf8')
    return text
      .slice(0, text.lastIndexOf('\n') + 1)
      .split('\n')
      .slice(0, -1)
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
}
