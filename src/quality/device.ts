import type { Value } from '../readings/index.js'
import type { Judgement, LoadedDevice, RuleDef } from '../store/index.js'
import { distanceKm, KM_PER_DEGREE } from './geo.js'
import { type SeqState, SequenceGaps } from './sequence.js'

/** The names of the built-in checks, as they appear in a reading's flags. */
export const FLAGS = {
  /** lat and lon both (within ~10 m of) 0: a receiver's "no fix", not a position. */
  gpsZero: 'gps_zero',
  /** The position moved farther from the last one than IOTCORE_MAX_SPEED_KMH allows in the time between. */
  gpsJump: 'gps_jump',
  /** ts more than 5 minutes after the platform received the reading. */
  tsFuture: 'ts_future',
  /** ts older than IOTCORE_MAX_READING_AGE when received. */
  tsOld: 'ts_old',
  /** A key whose last value was a number holds something else. */
  typeChanged: 'type_changed',
} as const

/** A user rule's flag: `rule:<its name>`. */
const RULE_FLAG_PREFIX = 'rule:'

/** The device alerts the checks want, with their severities (issue 15's scale: critical, major, minor, warning). */
export const DEVICE_ALERTS = {
  deviceCheck: { type: 'device_check', severity: 'major' },
  sequenceGap: { type: 'sequence_gap', severity: 'minor' },
} as const

export interface QualityOptions {
  maxSpeedKmh: number
  /** 0: readings are not judged by age. */
  maxReadingAgeSeconds: number
  deviceCheckViolations: number
  deviceCheckWindowSeconds: number
  gapAlertAfterSeconds: number
}

/** ts later than this past the receipt is in the future (issue 15: 5 minutes, room for a device's clock drift). */
const FUTURE_MS = 5 * 60_000
/** lat and lon within this of 0 (~10 m) are the 0,0 fix. */
const ZERO_DEG = 1e-4
/**
 * A move up to this far is never a jump, whatever the time between: receivers wander by tens of metres, in
 * cities by hundreds (multipath), at a standstill too.
 */
const JITTER_KM = 1
/** Fixes closer in time than this are compared as if this far apart: one ts for two positions is no speed. */
const MIN_DT_MS = 1000
const MS_PER_HOUR = 3_600_000

/**
 * The last good position is written with the device's state when that changes anyway, or once it is this much
 * older (by receipt) than the newest: a busy tracker's every batch moves it, and writing it each time would
 * cost a row per device per batch. A batch's first fix is then judged against an older good fix of the same
 * vehicle, which is as sound (no path is shorter than the great circle); only a jump within what the longer
 * time allows goes unseen.
 */
const POS_WRITE_MS = 60_000

/** A position: [lat, lon, ts]. */
type Fix = [number, number, number]
/** The last good position, and when (received, ms) it was written with the state: [lat, lon, ts, written]. */
type Pos = [number, number, number, number]

/** A user rule's memory for one device: `s` since when (ms), `h` the ts of recent hits, `v` the value held. */
interface Clock {
  s?: number
  h?: number[]
  v?: Value
}

/**
 * What the checks remember of a device between batches (devices.quality). Written only when it changes, so
 * most batches of a device write nothing.
 */
export interface DeviceState extends SeqState {
  pos?: Pos
  /** A position that jumped from `pos` (flagged): if the next one agrees with it, the device is there. */
  alt?: Fix
  /** Per key: 1 if its last value was a number, 0 if it turned to something else. A JSON object as parsed:
   * `=== 1` reads it, so a key named like an Object.prototype member reads as absent. */
  num?: Record<string, 0 | 1>
  /** 1 while it has open sequence gaps: only then are they loaded. */
  gaps?: 1
  /** When (received, ms) its latest violations came, at most IOTCORE_DEVICE_CHECK_VIOLATIONS of them. */
  viol?: number[]
  /** 1 while its device_check alert is wanted active. */
  chk?: 1
  /** Per user rule id. */
  rules?: Record<string, Clock>
}

/** Set by `breaks` when it moved a rule's clock: no object per call to say so. */
let clockMoved = false

/**
 * One device's checks through a batch: `reading` judges each stored reading, in the order they arrived, against
 * the built-in checks and the device's rules; `finish` adds to the judgement the alerts it wants, its gaps, and
 * its state if that changed.
 */
export class DeviceJudge {
  private dirty = false
  private readonly num: Record<string, 0 | 1>
  private gaps: SequenceGaps | undefined
  private readonly clocks: Clock[]
  private readonly ruleFlags: string[]
  private readonly viol: number[]
  private readonly maxAge: number
  private readonly maxKmPerMs: number
  private pos: Pos | undefined
  private alt: Fix | undefined
  /** When the newest good position was received. */
  private posAt = 0
  private newViolations = 0
  /** The newest receipt among its readings judged. */
  private newest = 0
  private lastFlagged: { msgId: string; ts: number; flags: string } | undefined

  constructor(
    private readonly d: LoadedDevice,
    /** Its state as last written; changed in place (its `pos` whether it is written or not). */
    readonly st: DeviceState,
    private readonly rules: readonly RuleDef[],
    private readonly o: QualityOptions,
    /** The msgIds stored, when not all of the batch's were: duplicates are not judged again. */
    readonly stored: ReadonlySet<string> | undefined,
  ) {
    this.num = st.num ?? {}
    this.gaps = d.gaps === undefined ? undefined : new SequenceGaps(st, d.gaps)
    this.clocks = rules.length === 0 ? [] : rules.map((r) => st.rules?.[r.id] ?? {})
    this.ruleFlags = rules.length === 0 ? [] : rules.map((r) => RULE_FLAG_PREFIX + r.name)
    this.viol = st.viol ?? []
    this.maxAge = o.maxReadingAgeSeconds * 1000
    this.maxKmPerMs = o.maxSpeedKmh / MS_PER_HOUR
    this.pos = st.pos
    this.alt = st.alt
  }

  reading(
    msgId: string,
    ts: number,
    receivedAt: number,
    values: Record<string, Value>,
    out: Judgement,
  ): void {
    if (receivedAt > this.newest) this.newest = receivedAt
    let flags: string | undefined
    if (ts > receivedAt + FUTURE_MS) flags = FLAGS.tsFuture
    else if (this.maxAge > 0 && ts < receivedAt - this.maxAge) flags = FLAGS.tsOld

    const lat = values.lat
    const lon = values.lon
    if (typeof lat === 'number' && typeof lon === 'number') {
      const bad = this.position(lat, lon, ts, receivedAt)
      if (bad !== undefined) flags = join(flags, bad)
    }

    let turned = false
    const num = this.num
    for (const k in values) {
      if (typeof values[k] === 'number') {
        if (num[k] !== 1) {
          num[k] = 1
          this.dirty = true
        }
      } else if (num[k] === 1) {
        num[k] = 0
        turned = true
        this.dirty = true
      }
    }
    if (turned) flags = join(flags, FLAGS.typeChanged)

    const seq = values.seq
    if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0) {
      this.gaps ??= new SequenceGaps(this.st, [])
      this.gaps.see(seq, ts, receivedAt)
    }

    const rules = this.rules
    for (let j = 0; j < rules.length; j++) {
      if (breaks(rules[j], this.clocks[j], values, ts)) flags = join(flags, this.ruleFlags[j])
      if (clockMoved) {
        clockMoved = false
        this.dirty = true
      }
    }

    if (flags !== undefined) {
      out.flags.pk.push(this.d.pk)
      out.flags.msgId.push(msgId)
      out.flags.names.push(flags)
      const viol = this.viol
      viol.push(receivedAt)
      if (viol.length > this.o.deviceCheckViolations)
        viol.splice(0, viol.length - this.o.deviceCheckViolations)
      this.newViolations++
      this.lastFlagged = { msgId, ts, flags }
    }
  }

  /** Takes a fix: the flag it earns (the 0,0 fix, out of reach of the last good one), if any. */
  private position(lat: number, lon: number, ts: number, receivedAt: number): string | undefined {
    if (Math.abs(lat) < ZERO_DEG && Math.abs(lon) < ZERO_DEG) return FLAGS.gpsZero
    const pos = this.pos
    if (pos === undefined) {
      this.pos = [lat, lon, ts, 0]
      this.posAt = receivedAt
      this.dirty = true
    } else if (reachable(pos, lat, lon, ts, this.maxKmPerMs)) {
      pos[0] = lat
      pos[1] = lon
      pos[2] = ts
      this.posAt = receivedAt
      if (this.alt !== undefined) {
        this.alt = undefined
        this.dirty = true
      }
    } else if (this.alt !== undefined && reachable(this.alt, lat, lon, ts, this.maxKmPerMs)) {
      // Two fixes in a row agree, away from the last one: the device is here (the last one was wrong, or it
      // was carried). The first of the two stays flagged; this one is taken.
      this.pos = [lat, lon, ts, 0]
      this.posAt = receivedAt
      this.alt = undefined
      this.dirty = true
    } else {
      this.alt = [lat, lon, ts]
      this.dirty = true
      return FLAGS.gpsJump
    }
    return undefined
  }

  /** Adds what it decided to the judgement; true if that includes its state, to be written. */
  finish(now: number, out: Judgement): boolean {
    const { d, o, st, viol } = this
    const maxViol = o.deviceCheckViolations
    if (this.newViolations > 0) this.dirty = true
    const windowMs = o.deviceCheckWindowSeconds * 1000
    const check = DEVICE_ALERTS.deviceCheck
    if (
      this.newViolations > 0 &&
      viol.length >= maxViol &&
      viol[viol.length - 1] - viol[viol.length - maxViol] <= windowMs
    ) {
      const last = viol[viol.length - 1]
      let inWindow = 0
      for (const t of viol) if (last - t <= windowMs) inWindow++
      const f = this.lastFlagged!
      want(out, d.pk, check.type, true, check.severity, {
        violations: inWindow,
        threshold: maxViol,
        windowSeconds: o.deviceCheckWindowSeconds,
        lastReading: { ...f, flags: f.flags.split(',') },
      })
      st.chk = 1
      this.dirty = true
    } else if (st.chk === 1 && (viol.length === 0 || this.newest - viol[viol.length - 1] > windowMs)) {
      want(out, d.pk, check.type, false, check.severity, { cleanForSeconds: o.deviceCheckWindowSeconds })
      delete st.chk
      this.dirty = true
    }

    const gaps = this.gaps
    if (gaps !== undefined) {
      gaps.write(d.pk, out)
      if (gaps.saveTo(st)) this.dirty = true
      const open = gaps.openSince(Number.POSITIVE_INFINITY)
      if (open !== (st.gaps === 1)) {
        if (open) st.gaps = 1
        else delete st.gaps
        this.dirty = true
      }
      const gap = DEVICE_ALERTS.sequenceGap
      if (d.alerts?.includes(gap.type) && !gaps.openSince(now - o.gapAlertAfterSeconds * 1000))
        want(out, d.pk, gap.type, false, gap.severity, {})
    }

    // Clocks of rules that no longer apply go; those that hold nothing are left out.
    let clockCount = 0
    for (const c of this.clocks) if (!idle(c)) clockCount++
    if (st.rules !== undefined && Object.keys(st.rules).length !== clockCount) this.dirty = true
    const pos = this.pos
    if (!this.dirty && pos !== undefined && this.posAt - pos[3] >= POS_WRITE_MS) this.dirty = true
    if (!this.dirty) return false

    if (pos !== undefined) {
      if (this.posAt > 0) pos[3] = this.posAt
      st.pos = pos
    }
    if (this.alt !== undefined) st.alt = this.alt
    else delete st.alt
    if (Object.keys(this.num).length > 0) st.num = this.num
    if (viol.length > 0) st.viol = viol
    else delete st.viol
    if (clockCount === 0) delete st.rules
    else {
      const kept: Record<string, Clock> = {}
      for (let j = 0; j < this.rules.length; j++)
        if (!idle(this.clocks[j])) kept[this.rules[j].id] = this.clocks[j]
      st.rules = kept
    }
    out.states.pk.push(d.pk)
    out.states.state.push(JSON.stringify(st))
    return true
  }
}

function idle(c: Clock): boolean {
  return c.s === undefined && c.v === undefined && (c.h === undefined || c.h.length === 0)
}

function join(flags: string | undefined, name: string): string {
  return flags === undefined ? name : `${flags},${name}`
}

/**
 * Whether a vehicle at `from` could be at (lat, lon) at `ts` without going faster than the limit. It holds for
 * any two fixes, in order or not, since no path is shorter than the great circle: readings late or out of
 * order are judged as well as any.
 */
function reachable(from: Fix | Pos, lat: number, lon: number, ts: number, maxKmPerMs: number): boolean {
  const allowed = JITTER_KM + maxKmPerMs * Math.max(Math.abs(ts - from[2]), MIN_DT_MS)
  // The degrees apart, added, bound the distance from above: most fixes are that close, and cost no cosine.
  if ((Math.abs(lat - from[0]) + Math.abs(lon - from[1])) * KM_PER_DEGREE <= allowed) return true
  return distanceKm(from[0], from[1], lat, lon) <= allowed
}

/** Whether this reading breaks the rule; sets clockMoved when it moved the rule's clock for the device. */
function breaks(rule: RuleDef, c: Clock, values: Record<string, Value>, ts: number): boolean {
  const cond = rule.condition
  // Own keys only: `toString` is a value's name like any other.
  const v = Object.hasOwn(values, cond.key) ? values[cond.key] : undefined
  if (cond.type === 'stuck') {
    if (v === undefined) return false
    if (c.s === undefined || c.v !== v) {
      c.v = v
      c.s = ts
      clockMoved = true
      return false
    }
    return ts - c.s >= cond.seconds * 1000
  }
  // A range holds numbers: anything else under its key is outside it.
  const holds =
    cond.type === 'missing'
      ? v === undefined
      : v !== undefined &&
        (typeof v !== 'number' ||
          (cond.min !== undefined && v < cond.min) ||
          (cond.max !== undefined && v > cond.max))
  const t = rule.trigger
  if (t.type === 'simple') return holds
  if (t.type === 'duration') {
    if (!holds) {
      if (c.s !== undefined) {
        c.s = undefined
        clockMoved = true
      }
      return false
    }
    if (c.s === undefined) {
      c.s = ts
      clockMoved = true
    }
    return ts - c.s >= t.seconds * 1000
  }
  if (!holds) return false
  const h = (c.h ??= [])
  h.push(ts)
  clockMoved = true
  const from = ts - t.seconds * 1000
  let old = 0
  while (old < h.length && h[old] < from) old++
  if (h.length - old > t.count) old = h.length - t.count
  if (old > 0) h.splice(0, old)
  return h.length >= t.count
}

function want(
  out: Judgement,
  pk: number,
  type: string,
  active: boolean,
  severity: string,
  details: Record<string, unknown>,
): void {
  const a = out.alerts
  a.pk.push(pk)
  a.type.push(type)
  a.active.push(active)
  a.severity.push(severity)
  a.details.push(JSON.stringify(details))
}
