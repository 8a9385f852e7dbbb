import type { Counter } from 'prom-client'
import type { Metrics } from '../metrics/index.js'

/** The reading counters of this process, each summed over its labels. */
export interface Counts {
  received: number
  acked: number
  rejected: number
  stored: number
  duplicate: number
  quarantined: number
}

/** The counters, and the queue's state, at one instant. */
export interface Snapshot extends Counts {
  /** Messages in the durable queue (not readings: a message may hold many). */
  queued: number
  /** Appends started and not yet durable. */
  appending: number
}

export type Verdict =
  /** The queue holds messages, whose readings no counter tells: the balance cannot be read now. */
  | { state: 'busy' }
  /** acked = stored + duplicate + quarantined, with the queue empty. */
  | { state: 'balanced' }
  /** A gap seen once: it may be a batch counted a moment after the queue emptied; the next check decides. */
  | { state: 'unconfirmed'; unaccounted: number }
  /** The same gap at two checks in a row with the queue empty: the counters drifted. */
  | { state: 'drift'; unaccounted: number }

async function sum(c: Counter<string>): Promise<number> {
  let n = 0
  for (const v of (await c.get()).values) n += v.value
  return n
}

/** Reads the counters (reading `received` hands the gateways' plain counts over first). */
export async function readCounts(m: Metrics): Promise<Counts> {
  const [received, acked, rejected, stored, duplicate, quarantined] = await Promise.all(
    [m.received, m.acked, m.rejected, m.stored, m.duplicate, m.quarantined].map((c) =>
      sum(c as Counter<string>),
    ),
  )
  return { received, acked, rejected, stored, duplicate, quarantined }
}

/**
 * The counters' reconciliation: every reading acknowledged is, once it has left the queue, stored, a duplicate
 * or quarantined, so `acked - (stored + duplicate + quarantined)` is what the queue still holds, and 0 when it is
 * empty. The queue counts messages, not readings, so the balance is read only when it is empty (and no append is
 * in flight); a gap seen there twice in a row, the same both times, is drift: positive, readings acknowledged
 * and never accounted for; negative, more accounted for than acknowledged.
 *
 * A process that starts with messages queued by an earlier one (a restart during a backlog) stores readings it
 * never acknowledged: its first balance at an empty queue is taken as its baseline, and what counts is the change
 * from it. One that starts with an empty queue and zero counters has a baseline of 0 from the start.
 */
export class CounterBalance {
  private baseline: number | undefined
  private previous = 0

  constructor(start: Snapshot) {
    const untouched = start.acked + start.stored + start.duplicate + start.quarantined === 0
    if (untouched && start.queued === 0 && start.appending === 0) this.baseline = 0
  }

  observe(s: Snapshot): Verdict {
    if (s.queued > 0 || s.appending > 0) return { state: 'busy' }
    const raw = s.acked - (s.stored + s.duplicate + s.quarantined)
    if (this.baseline === undefined) this.baseline = raw
    const gap = raw - this.baseline
    const previous = this.previous
    this.previous = gap
    if (gap === 0) return { state: 'balanced' }
    return gap === previous
      ? { state: 'drift', unaccounted: gap }
      : { state: 'unconfirmed', unaccounted: gap }
  }

  /** The balance this process started from (see the class comment); undefined until the queue was first empty. */
  get start(): number | undefined {
    return this.baseline
  }
}
