import type { Judgement, OpenGap } from '../store/index.js'

/**
 * A forward jump longer than this is taken for a counter that jumped (a new counter, a firmware's other
 * numbering), not for this many lost readings: tracking starts over from it, with no gap.
 */
const MAX_GAP = 100_000
/**
 * A seq at most this, below the highest seen and in no open gap, starts the count over: the device rebooted or
 * its counter wrapped (both restart at 0 or 1), so its `ts` is not older than the highest's. Any other seq below
 * the highest, in no open gap, is a repeat, unless it is below the lowest seen and older (below).
 */
const RESTART_SEQ = 1
/** Past this many open gaps a device's oldest is given up (closed with what it still misses). */
const MAX_OPEN_GAPS = 100

/**
 * What a device's state keeps of its count: the highest and the lowest seq seen since it began (or restarted),
 * each with its reading's `ts`. Undefined ends in a state written before they were kept: nothing is inferred.
 */
export interface SeqState {
  seq?: number
  seqTs?: number
  seqMin?: number
  seqMinTs?: number
}

interface Gap {
  /** Undefined for a gap found in this batch. */
  id: number | undefined
  first: number
  last: number
  missing: number[]
  openedAt: number
  changed: boolean
  closed: boolean
}

/**
 * One device's sequence numbers through a batch: the highest seen, and the gaps below it. Readings are taken
 * in the order they arrive: one that fills a gap shrinks it (or splits it, arriving in its middle); the gap
 * closes when nothing of it is missing. A counter restart gives up the open gaps: what they miss can no longer
 * be told from the new count's numbers, so they close, keeping what never came.
 *
 * A gap found here that is still open when the batch ends is one the device may be asked to resend: `write`
 * hands its range to the judgement's `resends`, and the store queues a `resend` command for it if the device
 * says it can (store/rules.ts, store/commands.ts). A gap given up within the batch is not asked for: after a
 * counter restart the old numbers name the new count's readings (and a device that rebooted has lost what it
 * kept), and one past MAX_OPEN_GAPS is the oldest of a device losing too much for a request to help. A gap
 * from an earlier batch was asked for then, if at all: each gap is asked for once.
 */
export class SequenceGaps {
  private readonly gaps: Gap[]

  private max: number | undefined
  private maxTs: number | undefined
  private min: number | undefined
  private minTs: number | undefined

  constructor(st: SeqState, open: readonly OpenGap[]) {
    this.max = st.seq
    this.maxTs = st.seqTs
    this.min = st.seqMin
    this.minTs = st.seqMinTs
    this.gaps = open.map((g) => ({
      id: g.id,
      first: g.missing[0],
      last: g.missing[g.missing.length - 1],
      missing: g.missing,
      openedAt: g.openedAt,
      changed: false,
      closed: false,
    }))
  }

  /** Writes the count's ends into `st`; true if they changed. */
  saveTo(st: SeqState): boolean {
    if (
      st.seq === this.max &&
      st.seqTs === this.maxTs &&
      st.seqMin === this.min &&
      st.seqMinTs === this.minTs
    )
      return false
    st.seq = this.max
    st.seqTs = this.maxTs
    st.seqMin = this.min
    st.seqMinTs = this.minTs
    return true
  }

  see(seq: number, ts: number, receivedAt: number): void {
    const max = this.max
    if (max === undefined) return this.restart(seq, ts)
    if (seq === max + 1) {
      this.max = seq
      this.maxTs = ts
      return
    }
    if (seq > max) {
      if (seq - max > MAX_GAP) return this.restart(seq, ts)
      this.open(max + 1, seq - 1, receivedAt)
      this.max = seq
      this.maxTs = ts
      return
    }
    for (const g of this.gaps) if (!g.closed && fill(g, seq)) return
    if (seq < max && seq <= RESTART_SEQ && (this.maxTs === undefined || ts >= this.maxTs))
      return this.restart(seq, ts)
    // Below the lowest seen and older: the count's earlier readings, judged after later ones (the ingest writes
    // two batches at once, and a device may send its backlog late). What lies between them is missing.
    const min = this.min
    if (
      min !== undefined &&
      seq < min &&
      min - seq <= MAX_GAP &&
      this.minTs !== undefined &&
      ts <= this.minTs
    ) {
      if (seq < min - 1) this.open(seq + 1, min - 1, receivedAt)
      this.min = seq
      this.minTs = ts
    }
  }

  /** Whether a gap opened at or before `at` (ms) is still open. */
  openSince(at: number): boolean {
    for (const g of this.gaps) if (!g.closed && g.openedAt <= at) return true
    return false
  }

  /**
   * Adds the gaps found and changed to the judgement, and the ranges to ask the device to resend: of each gap
   * found and still open, from the first to the last seq it still misses. A gap found and filled within the
   * batch was a reordering, not a gap: it is left out.
   */
  write(pk: number, out: Judgement): void {
    for (const g of this.gaps) {
      if (!g.changed) continue
      const missing = `{${g.missing.join(',')}}`
      if (g.id === undefined) {
        if (g.closed && g.missing.length === 0) continue
        const n = out.newGaps
        n.pk.push(pk)
        n.first.push(g.first)
        n.last.push(g.last)
        n.missing.push(missing)
        n.openedAt.push(g.openedAt)
        n.closed.push(g.closed)
        if (!g.closed) {
          const r = out.resends
          r.pk.push(pk)
          r.from.push(g.missing[0])
          r.to.push(g.missing[g.missing.length - 1])
        }
      } else {
        const c = out.changedGaps
        c.id.push(g.id)
        c.missing.push(missing)
        c.closed.push(g.closed)
      }
    }
  }

  private restart(seq: number, ts: number): void {
    for (const g of this.gaps) this.close(g)
    this.max = seq
    this.maxTs = ts
    this.min = seq
    this.minTs = ts
  }

  private open(first: number, last: number, receivedAt: number): void {
    this.gaps.push({
      id: undefined,
      first,
      last,
      missing: [first, last],
      openedAt: receivedAt,
      changed: true,
      closed: false,
    })
    this.limit()
  }

  private close(g: Gap): void {
    if (g.closed) return
    g.closed = true
    g.changed = true
  }

  /** Gives up the oldest open gaps past MAX_OPEN_GAPS. */
  private limit(): void {
    let open = 0
    for (const g of this.gaps) if (!g.closed) open++
    for (let i = 0; open > MAX_OPEN_GAPS && i < this.gaps.length; i++) {
      if (this.gaps[i].closed) continue
      this.close(this.gaps[i])
      open--
    }
  }
}

/** Takes `seq` out of the gap's missing ranges if it is there; closes the gap when nothing is left. */
function fill(g: Gap, seq: number): boolean {
  const m = g.missing
  for (let i = 0; i < m.length; i += 2) {
    const a = m[i]
    const b = m[i + 1]
    if (seq < a || seq > b) continue
    if (a === b) m.splice(i, 2)
    else if (seq === a) m[i] = a + 1
    else if (seq === b) m[i + 1] = b - 1
    else m.splice(i, 2, a, seq - 1, seq + 1, b)
    g.changed = true
    if (m.length === 0) g.closed = true
    return true
  }
  return false
}
