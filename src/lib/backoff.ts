/**
 * Capped exponential backoff with full jitter: after the n-th failure in a row, a pause drawn uniformly from
 * [0, min(maxMs, minMs * 2^(n-1))]. The cap keeps a returning server found within seconds; the jitter keeps
 * several processes (ingest workers, gateways reconnecting to a broker) from retrying a recovering server in
 * step. One instance per retried thing; `reset()` after a success.
 */
export class Backoff {
  private failed = 0

  constructor(
    readonly minMs: number,
    readonly maxMs: number,
  ) {}

  /** Failures since the last success. */
  get failures(): number {
    return this.failed
  }

  /** Counts one more failure and returns how long to wait before the next try, in ms. */
  next(): number {
    this.failed++
    return Math.random() * this.ceiling()
  }

  /** The longest pause the current failure count can draw: what `next()` just drew from. */
  ceiling(): number {
    return backoffCeiling(this.minMs, this.maxMs, this.failed)
  }

  reset(): void {
    this.failed = 0
  }
}

/** The longest pause after the `failures`-th failure in a row: minMs doubled per failure, capped at maxMs. */
export function backoffCeiling(minMs: number, maxMs: number, failures: number): number {
  // 2^30 is past any cap in ms; the exponent is bounded so the product stays finite.
  return Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 30))
}

/**
 * A pause drawn as Backoff draws it, for a thing whose failure count is kept elsewhere (a webhook delivery
 * counts its attempts in PostgreSQL, and any process may make the next one).
 */
export function jitteredPause(minMs: number, maxMs: number, failures: number): number {
  return Math.random() * backoffCeiling(minMs, maxMs, failures)
}

/**
 * Waits `ms`, or less if `signal` aborts (a stop during a retry loop). The timer is not unref()ed on purpose:
 * someone awaits this pause, and a process whose only work left is retrying (a start waiting for its
 * database or broker) must not exit in the middle of it.
 */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
  })
}
