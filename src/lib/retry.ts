/**
 * A later attempt at something that failed (a read, a connection): one pending at a time, none once stopped.
 * The timer is unref()ed: a pending retry is no reason for the process to stay up.
 */
export class RetryTimer {
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor(
    private readonly ms: number,
    private readonly attempt: () => void,
  ) {}

  /** Attempts again in `ms`; false, and nothing more is scheduled, if an attempt is pending or it is stopped. */
  schedule(): boolean {
    if (this.stopped || this.timer) return false
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.attempt()
    }, this.ms)
    this.timer.unref()
    return true
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
