import type { AckSink } from './types.js'

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
