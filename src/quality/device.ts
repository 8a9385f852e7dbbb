import type { Value } from '../readings/index.js'
import type { Judgement, LoadedDevice, RuleDef } from '../store/index.js'
import { distanceKm } from './geo.js'
import { SequenceGaps } from './sequence.js'

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
export const RULE_FLAG_PREFIX = 'rule:'

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
export const FUTURE_MS = 5 * 60_000
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

/** A position: [lat, lon, ts]. */
type Fix = [number, number, number]

/** A user rule's memory for one device: `s` since when (ms), `h` the ts of recent hits, `v` the value held. */
interface Clock {
  s?: number
  h?: number[]
  v?: Value
}

/**
 * What the checks remember of a device between batches (quality_state.state), kept small: it is read and
 * written with every batch of the device.
 */
export interface DeviceState {
  /** The last position taken for good. */
  pos?: Fix
  /** A position that jumped from `pos` (flagged): if the next one agrees with it, the device is there. */
  alt?: Fix
  /** The keys whose last value was a number. */
  num?: string[]
  /** The highest seq seen. */
  seq?: number
  /** When (received, ms) its latest violations came, at most IOTCORE_DEVICE_CHECK_VIOLATIONS of them. */
  viol?: number[]
  /** Per user rule id. */
  rules?: Record<string, Clock>
}

/**
 * Judges one device's stored readings, in the order they arrived, against the built-in checks and its rules;
 * adds to `out` its new state, its flagged readings, its gaps and its alerts wanted. `stored`: the msgIds
 * stored, when not all of them were (duplicates are not judged again).
 */
export function judgeDevice(
  d: LoadedDevice,
  state: DeviceState | null,
  msgIds: readonly string[],
  tss: readonly number[],
  receivedAts: readonly number[],
  valuess: ReadonlyArray<Record<string, Value>>,
  stored: ReadonlySet<string> | undefined,
  rules: readonly RuleDef[],
  o: QualityOptions,
  now: number,
  out: Judgement,
): void {
  const st: DeviceState = state ?? {}
  // Null prototype: a key named `toString` is data here.
  const num: Record<string, boolean> = Object.create(null)
  if (st.num) for (const k of st.num) num[k] = true
  const gaps = new SequenceGaps(st.seq, d.gaps)
  const clocks: Clock[] = rules.map((r) => st.rules?.[r.id] ?? {})
  const ruleFlags = rules.map((r) => RULE_FLAG_PREFIX + r.name)
  const viol = st.viol ?? []
  const maxViol = o.deviceCheckViolations
  const maxAge = o.maxReadingAgeSeconds * 1000
  const maxKmPerMs = o.maxSpeedKmh / MS_PER_HOUR
  let pos = st.pos
  let alt = st.alt
  let newViolations = 0
  let newest = 0
  let lastFlagged: { msgId: string; ts: number; flags: string } | undefined
  for (let i = 0; i < msgIds.length; i++) {
    const msgId = msgIds[i]
    if (stored !== undefined && !stored.has(msgId)) continue
    const ts = tss[i]
    const receivedAt = receivedAts[i]
    const values = valuess[i]
    if (receivedAt > newest) newest = receivedAt
    let flags: string | undefined
    if (ts > receivedAt + FUTURE_MS) flags = FLAGS.tsFuture
    else if (maxAge > 0 && ts < receivedAt - maxAge) flags = FLAGS.tsOld

    const lat = values.lat
    const lon = values.lon
    if (typeof lat === 'number' && typeof lon === 'number') {
      if (Math.abs(lat) < ZERO_DEG && Math.abs(lon) < ZERO_DEG) flags = join(flags, FLAGS.gpsZero)
      else if (pos === undefined || reachable(pos, lat, lon, ts, maxKmPerMs)) {
        pos = fix(pos, lat, lon, ts)
        alt = undefined
      } else if (alt !== undefined && reachable(alt, lat, lon, ts, maxKmPerMs)) {
        // Two fixes in a row agree, away from the last one: the device is here (the last one was wrong, or it
        // was carried). The first of the two stays flagged; this one is taken.
        pos = fix(pos, lat, lon, ts)
        alt = undefined
      } else {
        flags = join(flags, FLAGS.gpsJump)
        alt = fix(alt, lat, lon, ts)
      }
    }

    let turned = false
    for (const k in values) {
      if (typeof values[k] === 'number') {
        if (num[k] !== true) num[k] = true
      } else if (num[k] === true) {
        num[k] = false
        turned = true
      }
    }
    if (turned) flags = join(flags, FLAGS.typeChanged)

    const seq = values.seq
    if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0) gaps.see(seq, receivedAt)

    for (let j = 0; j < rules.length; j++) {
      if (breaks(rules[j], clocks[j], values, ts)) flags = join(flags, ruleFlags[j])
    }

    if (flags !== undefined) {
      out.flags.pk.push(d.pk)
      out.flags.msgId.push(msgId)
      out.flags.names.push(flags)
      viol.push(receivedAt)
      if (viol.length > maxViol) viol.splice(0, viol.length - maxViol)
      newViolations++
      lastFlagged = { msgId, ts, flags }
    }
  }

  const windowMs = o.deviceCheckWindowSeconds * 1000
  const check = DEVICE_ALERTS.deviceCheck
  if (
    newViolations > 0 &&
    viol.length >= maxViol &&
    viol[viol.length - 1] - viol[viol.length - maxViol] <= windowMs
  ) {
    const last = viol[viol.length - 1]
    let inWindow = 0
    for (const t of viol) if (last - t <= windowMs) inWindow++
    want(out, d.pk, check.type, true, check.severity, {
      violations: inWindow,
      threshold: maxViol,
      windowSeconds: o.deviceCheckWindowSeconds,
      lastReading: lastFlagged && { ...lastFlagged, flags: lastFlagged.flags.split(',') },
    })
  } else if (
    d.alerts.includes(check.type) &&
    (viol.length === 0 || newest - viol[viol.length - 1] > windowMs)
  ) {
    want(out, d.pk, check.type, false, check.severity, { cleanForSeconds: o.deviceCheckWindowSeconds })
  }

  gaps.write(d.pk, out)
  const gap = DEVICE_ALERTS.sequenceGap
  if (d.alerts.includes(gap.type) && !gaps.openSince(now - o.gapAlertAfterSeconds * 1000))
    want(out, d.pk, gap.type, false, gap.severity, {})

  const next: DeviceState = {}
  if (pos) next.pos = pos
  if (alt) next.alt = alt
  const numeric = Object.keys(num).filter((k) => num[k])
  if (numeric.length > 0) next.num = numeric
  if (gaps.highest !== undefined) next.seq = gaps.highest
  if (viol.length > 0) next.viol = viol
  for (let j = 0; j < rules.length; j++) {
    const c = clocks[j]
    if (c.s === undefined && c.v === undefined && (c.h === undefined || c.h.length === 0)) continue
    next.rules ??= {}
    next.rules[rules[j].id] = c
  }
  out.states.pk.push(d.pk)
  out.states.state.push(JSON.stringify(next))
}

function join(flags: string | undefined, name: string): string {
  return flags === undefined ? name : `${flags},${name}`
}

/** `f` set to the position, reusing its array: no allocation per reading. */
function fix(f: Fix | undefined, lat: number, lon: number, ts: number): Fix {
  if (f === undefined) return [lat, lon, ts]
  f[0] = lat
  f[1] = lon
  f[2] = ts
  return f
}

/**
 * Whether a vehicle at `from` could be at (lat, lon) at `ts` without going faster than the limit. It holds for
 * any two fixes, in order or not, since no path is shorter than the great circle: readings late or out of
 * order are judged as well as any.
 */
function reachable(from: Fix, lat: number, lon: number, ts: number, maxKmPerMs: number): boolean {
  const dt = Math.max(Math.abs(ts - from[2]), MIN_DT_MS)
  return distanceKm(from[0], from[1], lat, lon) <= JITTER_KM + maxKmPerMs * dt
}

/** Whether this reading breaks the rule, moving the rule's clock for the device. */
function breaks(rule: RuleDef, c: Clock, values: Record<string, Value>, ts: number): boolean {
  const cond = rule.condition
  // Own keys only: `toString` is a value's name like any other.
  const v = Object.hasOwn(values, cond.key) ? values[cond.key] : undefined
  if (cond.type === 'stuck') {
    if (v === undefined) return false
    if (c.s === undefined || c.v !== v) {
      c.v = v
      c.s = ts
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
      c.s = undefined
      return false
    }
    c.s ??= ts
    return ts - c.s >= t.seconds * 1000
  }
  if (!holds) return false
  const h = (c.h ??= [])
  h.push(ts)
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
