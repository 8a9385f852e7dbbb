import { LIMITS, type QuarantineReason, TOO_DEEP, deeperThan } from '../../readings/index.js'
import { parseTs, typeName } from '../../readings/time.js'

/**
 * The founders' signal (their device gateway's format, as its senders write it; cited as [signal]): one JSON
 * object, `{"device_number", "event_code", "message_date", "latitude", "longitude", ...}`, decoded into one
 * reading in our format (CONTRACT.md, "Readings"):
 * - `device_number`: the device's registered `imei` (a string, or a number).
 * - `event_code` -> `event` (a number; a numeric string is read as one), and for the codes the founders named,
 *   `eventName` (EVENT_NAMES).
 * - `message_date` -> the reading's `ts`: `YYYY/MM/DD HH:MM:SS` in UTC, or an RFC 3339 (ISO 8601) date-time
 *   with its offset. Absent: the time the platform received it.
 * - `latitude`, `longitude` -> `lat`, `lon`, degrees, numbers or numeric strings.
 * - every other key is kept as a value under its own name.
 * No msgId is set: the ingest derives one from the device, the time and the content (readings/index.ts), so a
 * signal sent again after a missing `1` is stored once, and two different signals of the same second are both.
 * Nothing here judges the reading: that is the one judge's (src/readings), which gets what this decodes.
 */

/** [signal] event codes with a name. */
export const EVENT_NAMES: ReadonlyMap<number, string> = new Map([
  [7000, 'ignition_on'],
  [7001, 'acceleration'],
  [7002, 'deceleration'],
  [7003, 'ignition_off'],
])

/** What a signal decodes to: the reading JSON, or why not; `imei` whenever it named a device. */
export type DecodedSignal =
  | { ok: true; imei: string; reading: Buffer }
  | { ok: false; imei: string | undefined; reason: QuarantineReason; detail: string }

/** [signal] keys that become the reading's own fields and values; the rest are values as they are. */
const FIELDS = new Set(['device_number', 'event_code', 'message_date', 'latitude', 'longitude'])
/** [signal] `message_date` in the founders' own form, always UTC. */
const FOUNDERS_DATE = /^(\d{4})\/(\d{2})\/(\d{2}) (\d{2}:\d{2}:\d{2})$/
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/
const INTEGER = /^[+-]?\d{1,15}$/

export function decodeSignal(raw: Buffer): DecodedSignal {
  let doc: unknown
  try {
    doc = JSON.parse(raw.toString('utf8'))
  } catch (err) {
    return fail(undefined, 'malformed_json', notJson(err))
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return fail(undefined, 'not_an_object', `expected a JSON object, got ${typeName(doc)}`)
  const s = doc as Record<string, unknown>
  const dn = s.device_number
  const imei =
    typeof dn === 'string' ? dn : typeof dn === 'number' && Number.isSafeInteger(dn) ? String(dn) : ''
  if (imei === '')
    return fail(
      undefined,
      'invalid_value',
      'device_number is required: the imei the device was registered with',
    )
  // Refused before anything copies it: JSON.stringify recurses, and a value nested 100,000 deep overflows it.
  if (deeperThan(s, LIMITS.maxDepth)) return fail(imei, 'too_deep', TOO_DEEP)

  // A null-prototype object: a key such as `__proto__` stays a key (for the judge to refuse), not a prototype.
  const values: Record<string, unknown> = Object.create(null)
  let ts: number | undefined
  if (s.message_date !== undefined && s.message_date !== null) {
    const t = signalTime(s.message_date)
    if (typeof t === 'string') return fail(imei, 'invalid_ts', t)
    ts = t
  }
  for (const [field, key] of [
    ['latitude', 'lat'],
    ['longitude', 'lon'],
  ]) {
    const v = s[field]
    if (v === undefined || v === null) continue
    const n = typeof v === 'number' ? v : typeof v === 'string' && DECIMAL.test(v) ? Number(v) : Number.NaN
    if (!Number.isFinite(n))
      return fail(imei, 'invalid_value', `${field} must be a number of degrees, got ${shown(v)}`)
    values[key] = n
  }
  const code = s.event_code
  if (code !== undefined && code !== null) {
    const n =
      typeof code === 'number'
        ? code
        : typeof code === 'string' && INTEGER.test(code)
          ? Number(code)
          : Number.NaN
    if (!Number.isSafeInteger(n))
      return fail(imei, 'invalid_value', `event_code must be an integer, got ${shown(code)}`)
    values.event = n
    const name = EVENT_NAMES.get(n)
    if (name !== undefined) values.eventName = name
  }
  for (const key of Object.keys(s)) {
    if (FIELDS.has(key)) continue
    if (Object.hasOwn(values, key))
      return fail(imei, 'duplicate_key', `the key "${key}" names a value the signal's fields already give`)
    values[key] = s[key]
  }
  const reading = ts === undefined ? { values } : { ts, values }
  return { ok: true, imei, reading: Buffer.from(JSON.stringify(reading)) }
}

/** [signal] `message_date` in ms since the epoch, or what is wrong with it. */
function signalTime(v: unknown): number | string {
  const forms = 'YYYY/MM/DD HH:MM:SS (UTC) or an RFC 3339 date-time with an offset (2026-11-23T08:00:00Z)'
  if (typeof v !== 'string') return `message_date must be ${forms}, got ${typeName(v)}`
  const m = FOUNDERS_DATE.exec(v)
  // The founders' form is the RFC 3339 instant in UTC written another way: one parser checks both.
  const t = parseTs(m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}Z` : v)
  return typeof t === 'number' ? t : `message_date ${shown(v)} is not ${forms}: ${t.message}`
}

function shown(v: unknown): string {
  if (v !== null && typeof v === 'object') return typeName(v)
  const s = typeof v === 'string' ? v : String(v)
  return JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s)
}

function fail(imei: string | undefined, reason: QuarantineReason, detail: string): DecodedSignal {
  return { ok: false, imei, reason, detail }
}

/**
 * Why the signal is not JSON: the parser's message (which quotes the input), cut, and escaped as JSON escapes
 * text, so that no control character or unpaired surrogate reaches a log or the quarantine's text.
 */
function notJson(err: unknown): string {
  const m = (err as Error).message
  return `the signal is not JSON: ${JSON.stringify(m.length > 200 ? m.slice(0, 200) + '...' : m).slice(1, -1)}`
}
