import type { Socket } from 'node:net'
import { type ErrorArgs, type ErrorCode, IotError } from '../../errors.js'
import type { AckSink, Envelope } from '../../queue/types.js'
import { judgePayload } from '../../readings/index.js'
import { envelopeId, quarantineRefused } from '../accept.js'
import type { JsonlGateway } from './gateway.js'
import { LineReader, TOO_LONG, blank, parseHello } from './lines.js'

/** Where a connection is: waiting for its first line, authenticating it, taking readings, closing, closed. */
export const LineState = { hello: 0, auth: 1, open: 2, closing: 3, closed: 4 } as const
export type LineState = (typeof LineState)[keyof typeof LineState]

/**
 * Lines taken and not yet answered at most: past it the socket is paused until half of them are answered. A
 * line waits for one group commit (milliseconds), so this is a window a pipelining sender fills without
 * waiting, and a bound on what one connection holds in memory.
 */
export const MAX_IN_FLIGHT = 1000
/** Answers written and not yet read by the sender, in bytes, past which its lines are not read either. */
const WRITE_BACKLOG_BYTES = 64 * 1024

const EMPTY = Buffer.alloc(0)

/** An error answer line's JSON: `{"error": code, "message": ...}`. */
export function errorLine(code: ErrorCode, args?: ErrorArgs): string {
  return JSON.stringify({ error: code, message: new IotError(code, args).message })
}

/**
 * One JSON-lines connection: the first line authenticates, then each line is a reading or an array, answered
 * by one line once durably queued (`{"ok": n}`) or refused (`{"error": code, "message": ...}`), in the order of
 * the lines. Lines go to the queue with this connection as their AckSink and their number as the token, so
 * thousands of lines in flight cost no promise or closure each; answers are written once per commit.
 */
export class JsonlConnection implements AckSink {
  state: LineState = LineState.hello
  deviceId = ''
  /** The token hash it authenticated with: a rotation or a delete of the device cuts it (gateway.ts). */
  tokenHash = ''
  readonly address: string
  readonly openedAt = Date.now()
  lastActivity = this.openedAt
  closingSince = 0
  readonly reader: LineReader
  /** Answers not yet written, in line order, and whether each is final; answers[0] is line number `base`. */
  private answers: string[] = []
  private ready: boolean[] = []
  private base = 0
  private inFlight = 0
  /** Too many lines in flight: not reading until half are answered. */
  private throttled = false
  paused = false
  /** The sender ended its side: once its last line is answered, so is the connection. */
  private ended = false
  private corked = false
  private ackedReadings = 0

  constructor(
    private readonly gw: JsonlGateway,
    private readonly socket: Socket,
  ) {
    this.address = socket.remoteAddress ?? ''
    this.reader = new LineReader(gw.opts.maxPayloadBytes)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('end', () => this.onEnd())
    socket.on('drain', () => this.pump())
    socket.on('error', () => this.teardown())
    socket.on('close', () => this.teardown())
  }

  private onData(chunk: Buffer): void {
    // Closing, what still comes is read and dropped: left unread, it would turn the close into a reset that
    // can destroy the last answers before they are delivered.
    if (this.state >= LineState.closing) return
    this.lastActivity = this.gw.now
    this.reader.feed(chunk, this.gw.now)
    this.pump()
  }

  private onEnd(): void {
    this.ended = true
    if (this.state < LineState.closing) this.pump()
  }

  /** Takes the lines read, one by one, while nothing holds them back; then sets the socket's flow. */
  private pump(): void {
    try {
      while ((this.state === LineState.hello || this.state === LineState.open) && !this.mustWait()) {
        const line = this.reader.next()
        if (line === null) {
          if (this.ended) this.last()
          break
        }
        if (line === TOO_LONG) this.tooLong()
        else if (!blank(line)) {
          if (this.state === LineState.hello) this.hello(line)
          else this.reading(line)
        }
      }
    } catch (err) {
      // A fault of ours while handling this connection's input: close it, keep the listener.
      this.fail(err)
    }
    this.flow()
  }

  /** The stream ended: its unterminated last line, if any, is taken, and the connection closes once answered. */
  private last(): void {
    const line = this.reader.end()
    if (line === TOO_LONG) return this.tooLong()
    if (line !== null && !blank(line)) {
      if (this.state === LineState.hello) return this.hello(line)
      this.reading(line)
    }
    if (this.state === LineState.open || this.state === LineState.hello) this.finish()
  }

  private mustWait(): boolean {
    return this.throttled || this.socket.writableLength > WRITE_BACKLOG_BYTES
  }

  /** Reads from the socket only while lines can be taken (and, closing, to drop what comes). */
  private flow(): void {
    if (this.state === LineState.closed) return
    const pause = this.state !== LineState.closing && (this.state === LineState.auth || this.mustWait())
    if (pause && !this.paused) {
      this.paused = true
      this.socket.pause()
    } else if (!pause && this.paused) {
      this.paused = false
      // The wait was ours: a line begun before it gets its full time again.
      if (this.reader.since > 0) this.reader.since = this.gw.now
      this.socket.resume()
    }
  }

  private hello(line: Buffer): void {
    const h = parseHello(line)
    if (typeof h === 'string') {
      this.gw.peers.count('malformed')
      this.gw.log.info({ address: this.address, why: h }, 'JSON-lines connection refused')
      return this.finish(
        errorLine('IOT_ERR_UNAUTHORIZED', `${h}; send {"id": <device id>, "token": <device token>} first`),
      )
    }
    this.state = LineState.auth
    this.gw.credentials
      .authenticate(h.id, h.token)
      .then(
        (cred) => this.authenticated(h.id, cred?.tokenHash),
        () => this.authenticated(h.id, undefined),
      )
      .catch((err) => this.fail(err))
  }

  private authenticated(id: string, tokenHash: string | undefined): void {
    if (this.state !== LineState.auth) return
    if (tokenHash === undefined) {
      this.gw.peers.refuse(this.address, 'bad_token', id)
      return this.finish(errorLine('IOT_ERR_UNAUTHORIZED', 'bad device id or token'))
    }
    this.deviceId = id
    this.tokenHash = tokenHash
    this.state = LineState.open
    this.push(JSON.stringify({ device: id }), true)
    this.flush()
    this.pump()
  }

  /** A reading line: judged, then queued (answered at its commit) or refused (answered in its turn). */
  private reading(line: Buffer): void {
    const parsed = judgePayload(line)
    const valid = parsed.valid
    const bad = parsed.rejections.length
    this.gw.countReceived(valid + bad)
    if (valid === 0) {
      // Nothing in it can be stored: refused like HTTP's 400, and kept in the quarantine as not acknowledged.
      const { reason, detail } = parsed.rejections[0]
      quarantineRefused(this.gw.queue, this.gw.metrics, this.deviceId, 'jsonl', line, reason, detail)
      const code = reason === 'malformed_json' ? 'IOT_ERR_MALFORMED_JSON' : 'IOT_ERR_INVALID_READING'
      this.push(errorLine(code, detail), true)
      if (!this.corked) this.flush()
      return
    }
    if (bad > 0) {
      const { reason, detail } = parsed.rejections[0]
      this.gw.log.info({ deviceId: this.deviceId, reason, detail }, 'invalid readings quarantined')
    }
    const env: Envelope = {
      id: envelopeId('j'),
      deviceId: this.deviceId,
      transport: 'jsonl',
      receivedAt: Date.now(),
      payload: line,
    }
    if (bad === 0) env.allValid = true
    const token = this.base + this.answers.length
    try {
      this.gw.queue.enqueue(env, this, token, valid + bad)
    } catch (err) {
      // Never answer ok for what we cannot keep: the queue is full or unreachable; the line is not taken.
      this.push(queueError(err), true)
      if (!this.corked) this.flush()
      return
    }
    this.push(bad === 0 ? `{"ok":${valid}}` : `{"ok":${valid},"quarantined":${bad}}`, false)
    if (++this.inFlight >= MAX_IN_FLIGHT) this.throttled = true
  }

  private push(answer: string, ready: boolean): void {
    this.answers.push(answer)
    this.ready.push(ready)
  }

  // ---- durable acks (AckSink): the queue reports a commit as cork, ack per line, uncork

  cork(): void {
    this.corked = true
  }

  ack(token: number, count: number, err: Error | undefined): void {
    if (this.state === LineState.closed) return
    const i = token - this.base
    if (err) this.answers[i] = queueError(err)
    else this.ackedReadings += count
    this.ready[i] = true
    this.inFlight--
    if (!this.corked) this.flush()
  }

  uncork(): void {
    this.corked = false
    if (this.ackedReadings > 0) {
      this.gw.metrics.acked.inc({ transport: 'jsonl' }, this.ackedReadings)
      this.ackedReadings = 0
    }
    if (this.state === LineState.closed) return
    this.flush()
    if (this.throttled && this.inFlight < MAX_IN_FLIGHT / 2) {
      this.throttled = false
      this.pump()
    }
  }

  /** Writes the answers that are final, in line order, in one write; closing, ends once all are out. */
  private flush(): void {
    let k = 0
    let out = ''
    while (k < this.answers.length && this.ready[k]) out += this.answers[k++] + '\n'
    if (k > 0) {
      this.answers.splice(0, k)
      this.ready.splice(0, k)
      this.base += k
      if (this.socket.writable) this.socket.write(out)
    }
    if (this.state === LineState.closing && this.answers.length === 0 && this.socket.writable)
      this.socket.end()
  }

  // ---- closing

  /**
   * Takes no more lines; the ones taken are still answered, then `last` if given, then the connection ends.
   * The gateway's sweep cuts it if that takes too long (answers that never come, a sender that never closes).
   */
  finish(last?: string): void {
    if (this.state >= LineState.closing) return
    this.state = LineState.closing
    this.closingSince = this.gw.now
    if (last !== undefined) this.push(last, true)
    this.flow()
    this.flush()
  }

  timeout(why: string): void {
    this.gw.peers.count('timeout')
    this.gw.log.info(
      { address: this.address, deviceId: this.deviceId || undefined, why },
      'JSON-lines timeout',
    )
    this.finish(errorLine('IOT_ERR_TIMEOUT', why))
  }

  /** The credential it authenticated with was revoked (a retired or deleted device, a rotated token). */
  revoke(why: string): void {
    this.gw.log.info(
      { deviceId: this.deviceId, why },
      'JSON-lines connection cut: its credential was revoked',
    )
    this.finish(errorLine('IOT_ERR_UNAUTHORIZED', why))
  }

  private tooLong(): void {
    const max = this.gw.opts.maxPayloadBytes
    const detail = `a line of more than ${max} bytes`
    this.gw.peers.count('too_large')
    this.gw.log.info({ address: this.address, deviceId: this.deviceId || undefined }, 'JSON line too long')
    if (this.state === LineState.open)
      quarantineRefused(
        this.gw.queue,
        this.gw.metrics,
        this.deviceId,
        'jsonl',
        EMPTY,
        'payload_too_large',
        detail,
      )
    this.finish(errorLine('IOT_ERR_PAYLOAD_TOO_LARGE', [detail, max]))
  }

  private fail(err: unknown): void {
    this.gw.log.error({ err, deviceId: this.deviceId || undefined }, 'JSON-lines handler failed; closing')
    this.finish(errorLine('IOT_ERR_INTERNAL'))
  }

  destroy(): void {
    this.socket.destroy()
    this.teardown()
  }

  private teardown(): void {
    if (this.state === LineState.closed) return
    this.state = LineState.closed
    this.answers = []
    this.ready = []
    this.gw.closed(this)
  }
}

/** The answer to a line the queue would not take (full, unreachable) or failed to make durable. */
function queueError(err: unknown): string {
  if (err instanceof IotError) return JSON.stringify({ error: err.code, message: err.message })
  return errorLine('IOT_ERR_QUEUE_UNAVAILABLE', (err as Error).message)
}
