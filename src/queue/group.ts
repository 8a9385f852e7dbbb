import { IotError } from '../errors.js'
import type { AckSink, Envelope } from './types.js'

/**
 * Messages appended in one event-loop turn share a commit. When it lands, every sink is corked once, acked
 * per token, then uncorked: one socket write per connection per commit.
 */
export class CommitGroup {
  readonly sinks: AckSink[] = []
  readonly tokens: number[] = []
  readonly counts: number[] = []
  readonly createdAt = performance.now()

  add(sink: AckSink, token: number, count: number): void {
    this.sinks.push(sink)
    this.tokens.push(token)
    this.counts.push(count)
  }

  get size(): number {
    return this.sinks.length
  }

  settle(err: Error | undefined): void {
    const { sinks, tokens, counts } = this
    const seen = new Set<AckSink>()
    for (const s of sinks) {
      if (!seen.has(s)) {
        seen.add(s)
        s.cork()
      }
    }
    for (let i = 0; i < sinks.length; i++) {
      try {
        sinks[i].ack(tokens[i], counts[i], err)
      } catch {
        // One connection's failure to write an ack must not keep the others from theirs.
      }
    }
    for (const s of seen) s.uncork()
  }
}

/** An AckSink that resolves a promise once all its tokens are acked, for one-request-at-a-time callers. */
export class PromiseSink implements AckSink {
  private remaining: number
  private error: Error | undefined
  readonly promise: Promise<void>
  private resolve!: () => void
  private reject!: (e: Error) => void

  constructor(count: number) {
    this.remaining = count
    this.promise = new Promise<void>((res, rej) => {
      this.resolve = res
      this.reject = rej
    })
    if (count === 0) this.resolve()
  }

  cork(): void {}
  uncork(): void {}
  ack(_token: number, _count: number, err: Error | undefined): void {
    if (err && !this.error) this.error = err
    if (--this.remaining === 0) {
      if (this.error) this.reject(this.error)
      else this.resolve()
    }
  }
}

/**
 * The producer side both queues share: appends made in one event-loop turn become one group, handed to
 * `commit` once; when it reports durable, the group's sinks are acked together. Each message is handed to
 * `stage` as it is appended, so a queue may encode it at once and keep nothing of the envelope.
 */
export abstract class GroupCommitQueue {
  private open: CommitGroup | null = null
  private inFlight = 0
  private readonly flushBound = () => this.flush()
  /** Called with each group commit's latency in ms, for the metrics. */
  onCommit: ((ms: number) => void) | undefined

  /** Throws an IotError to refuse the message (queue full or unreachable); it is then not acked. */
  protected abstract admit(env: Envelope): void
  /** Takes an admitted message into the open group. */
  protected abstract stage(env: Envelope): void
  /**
   * Makes the messages staged since the last call (`count` of them) durable, and calls `done` exactly once:
   * with nothing when they are, with the error if not.
   */
  protected abstract commit(count: number, done: (err?: Error) => void): void

  get appending(): number {
    return this.inFlight + (this.open?.size ?? 0)
  }

  enqueue(env: Envelope, sink: AckSink, token: number, count: number): void {
    this.admit(env)
    if (this.open === null) {
      this.open = new CommitGroup()
      setImmediate(this.flushBound)
    }
    this.stage(env)
    this.open.add(sink, token, count)
  }

  enqueueAll(envs: Envelope[]): Promise<void> {
    const sink = new PromiseSink(envs.length)
    for (let i = 0; i < envs.length; i++) this.enqueue(envs[i], sink, i, 1)
    return sink.promise
  }

  protected flush(): void {
    const group = this.open
    if (!group) return
    this.open = null
    const count = group.size
    this.inFlight += count
    let settled = false
    this.commit(count, (err) => {
      if (settled) return
      settled = true
      this.inFlight -= count
      if (!err) this.onCommit?.(performance.now() - group.createdAt)
      group.settle(err ? new IotError('IOT_ERR_QUEUE_UNAVAILABLE', err.message) : undefined)
    })
  }
}
