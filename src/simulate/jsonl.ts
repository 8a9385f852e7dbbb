import type { Socket } from 'node:net'
import { StringDecoder } from 'node:string_decoder'
import type { SenderFactory } from './senders.js'
import { StreamDevice, streamSender } from './stream-device.js'

/**
 * Lines sent and not yet answered at most, per device: below the gateway's 1,000 (src/gateway/jsonl), so a
 * device never has it stop reading.
 */
const WINDOW = 500
/** Answers that refuse the reading for good (the platform quarantined it); any other error is retried. */
const REFUSALS = new Set(['IOT_ERR_INVALID_READING', 'IOT_ERR_MALFORMED_JSON', 'IOT_ERR_PAYLOAD_TOO_LARGE'])

/**
 * A JSON-lines device (README "JSON lines"): `{"id", "token"}` first, answered `{"device": id}` (or an error
 * line and the close: tried again later); then one reading per line, as many as its window holds before the
 * answers, which come one a line in order: `{"ok": 1}` acks its line, an error refuses it. Another error (the
 * queue unavailable, a revoked token) starts the connection over, and the lines not answered go again.
 */
class LineDevice extends StreamDevice {
  private decoder = new StringDecoder('utf8')
  private partial = ''

  constructor(
    host: string,
    port: number,
    private readonly id: string,
    private readonly token: string,
    events: ConstructorParameters<typeof StreamDevice>[2],
    onOpen: () => void,
  ) {
    super(host, port, events, onOpen)
  }

  protected greeting(): string {
    return `${JSON.stringify({ id: this.id, token: this.token })}\n`
  }

  protected received(data: Buffer): void {
    const text = this.partial + this.decoder.write(data)
    let start = 0
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      const line = text.slice(start, nl)
      start = nl + 1
      if (!this.answer(line)) return
    }
    this.partial = text.slice(start)
    this.flush()
  }

  /** One answer line; false when it ended the connection. */
  private answer(line: string): boolean {
    // The answer of almost every line, read without a parse.
    if (this.open && line === '{"ok":1}') {
      this.answered(1)
      return true
    }
    if (line.trim() === '') return true
    let a: { device?: unknown; ok?: unknown; error?: unknown; message?: unknown }
    try {
      a = JSON.parse(line)
    } catch {
      this.drop()
      return false
    }
    if (!this.open) {
      if (typeof a.device !== 'string') {
        this.turnedAway()
        return false
      }
      this.accepted()
      return true
    }
    if (typeof a.ok === 'number') this.answered(1)
    else if (typeof a.error === 'string' && REFUSALS.has(a.error))
      this.refusedFirst(`${a.error}: ${String(a.message ?? '')}`)
    else {
      this.drop()
      return false
    }
    return true
  }

  protected write(socket: Socket): void {
    const room = Math.min(WINDOW - this.inflight.length, this.queue.length)
    if (room <= 0) return
    const batch = this.queue.splice(0, room)
    let out = ''
    for (const q of batch) {
      out += JSON.stringify(q.reading) + '\n'
      this.inflight.push(q)
    }
    socket.write(out)
  }

  protected reset(): void {
    this.decoder = new StringDecoder('utf8')
    this.partial = ''
  }
}

/** JSON lines over TCP, one connection per device, authenticated by id and token. */
export const jsonlSender: SenderFactory = (target, devices, events) =>
  streamSender(
    devices.length,
    (i, onOpen) =>
      new LineDevice(target.host, target.jsonlPort, devices[i].id, devices[i].token, events, onOpen),
  )
