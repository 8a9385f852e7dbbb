import type { Batch, Envelope } from './types.js'

/**
 * A batch as both consumers hand it out: acked or nacked through the consumer that made it, which finds in
 * `delivery` what it needs for that (the LMDB keys, or the AMQP channel and messages).
 */
export class ConsumerBatch<D> implements Batch {
  constructor(
    private readonly consumer: {
      ack(batch: ConsumerBatch<D>): Promise<void>
      nack(batch: ConsumerBatch<D>): void
    },
    readonly delivery: D,
    readonly items: Envelope[],
    readonly attempt: number,
  ) {}

  ack(): Promise<void> {
    return this.consumer.ack(this)
  }

  nack(): void {
    this.consumer.nack(this)
  }
}

/**
 * How a consumer waits for a batch to fill: woken when items arrive (an append, a delivery) or it closes, or
 * after a timeout. The timers are not unref()ed: a consumer waiting for work is the process's work (an
 * ingest-only process has little else).
 */
export class BatchWait {
  private waiter: (() => void) | undefined
  private stopped = false

  get closed(): boolean {
    return this.stopped
  }

  /**
   * Resolves true once `ready()`, which takes what is at hand and counts the batch's items, reaches `max`, or
   * finds some once `waitMs` have passed since the call; false once closed. With no item, it waits for a wake,
   * or `idleMs` at the most.
   */
  async fill(max: number, waitMs: number, idleMs: number, ready: () => number): Promise<boolean> {
    const started = Date.now()
    for (;;) {
      if (this.stopped) return false
      const n = ready()
      const elapsed = Date.now() - started
      if (n >= max || (n > 0 && elapsed >= waitMs)) return true
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        this.waiter = resolve
        timer = setTimeout(resolve, n > 0 ? waitMs - elapsed : idleMs)
      })
      // Woken by an append, the timer would otherwise stay pending: one per wake, every commit.
      clearTimeout(timer)
      this.waiter = undefined
    }
  }

  wake(): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  /** Ends the wait under way, and every later one, with false. */
  close(): void {
    this.stopped = true
    this.wake()
  }
}
