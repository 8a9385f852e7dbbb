import { LIMITS, type QuarantineReason, TOO_DEEP, type Value, deeperThan } from '../../readings/index.js'
import { parseTs, typeName } from '../../readings/time.js'
import { type DecimalFactor, FRACTION_TO_PERCENT, KNOTS_TO_KMH, MPS_TO_KMH, timesDecimal } from './units.js'

/**
 * The OsmAnd protocol as Traccar's server reads it (org.traccar.protocol.OsmAndProtocolDecoder, Traccar 6.14;
 * https://www.traccar.org/osmand/), decoded into one reading in our format (CONTRACT.md, "Readings"). The two
 * forms, cited below by these ids:
 * - [osmand-query] parameters, in the query string (GET, or a POST with one) or in a form-urlencoded body (as
 *   the Traccar Client apps send them through traccar-client-sdk 1.0's HttpUploader): `id` or `deviceid`,
 *   `timestamp`, `lat`, `lon` or `location=lat,lon`, `speed` (knots), `bearing` or `heading`, `altitude`,
 *   `accuracy`, `hdop`, `batt`, `charge`, `driverUniqueId`; any other parameter is kept as a value under its
 *   own name.
 * - [osmand-json] the JSON body of the Traccar Client versions built on transistorsoft's background-geolocation
 *   (its location record, as Traccar's decoder tests show it): `{device_id, location: {timestamp, coords: {latitude, longitude, speed (m/s), heading,
 *   accuracy, altitude}, is_moving, odometer, event, battery: {level (0 to 1), is_charging}, activity: {type},
 *   extras}}`.
 *
 * Units become ours: speeds km/h (`speed`), degrees (`heading`), metres (`alt`, `accuracy`, `odometer`),
 * battery `batt` in %. Nothing here judges a reading: what is decoded goes to the one judge (src/readings)
 * like any reading; what cannot be decoded (a number that is not one) is refused here with its reason.
 */

/** What a request decodes to: the reading, or why not; `imei` whenever the request named a device. */
export type Decoded =
  | { ok: true; imei: string; reading: OsmAndReading }
  | { ok: false; imei: string | undefined; reason: QuarantineReason; detail: string }

export interface OsmAndReading {
  /** ms since the epoch: the device's time of the fix */
  ts?: number
  msgId?: string
  values: Record<string, unknown>
}

/** A decimal number as a parameter may write it ([osmand-query] values are Java doubles in Traccar). */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/
/** Digits only: seconds, or ms, since the epoch. */
const DIGITS = /^\d{1,16}$/
/**
 * [osmand-query] `timestamp` in digits is seconds below 2^31 and ms from there on, as Traccar reads it: the two
 * ranges cannot meet (2^31 ms after the epoch is 1970-01-25; 2^31 s is 2038-01-19).
 */
const SECONDS_BELOW = 2 ** 31

/**
 * The reading's msgId: the device's own time of the fix, so a request the app sends again (it buffers and
 * retries until it gets a 200) is stored once. One reading per device per ms: the apps send one fix at a time,
 * timestamped to the second (query) or the ms (JSON).
 */
export const msgIdOf = (ts: number) => `osmand-${ts}`

/** Decodes an [osmand-query] parameter string (a query string without its `?`, or a form body). */
export function decodeQuery(text: string): Decoded {
  const values: Record<string, unknown> = Object.create(null)
  let imei: string | undefined
  let ts: number | undefined
  let problem: { reason: QuarantineReason; detail: string } | undefined
  const bad = (reason: QuarantineReason, detail: string) => {
    problem ??= { reason, detail }
  }
  const number = (key: string, raw: string, to: string, factor?: DecimalFactor) => {
    const n = decimal(raw, factor)
    if (n === undefined) bad('invalid_value', `parameter '${key}' must be a number, got ${quote(raw)}`)
    else values[to] = n
  }
  // Every parameter is read, a bad one included, so the device is known whatever the order. One given twice
  // (or two that mean the same: bearing and heading) keeps the last, as Traccar does.
  for (const [key, raw] of new URLSearchParams(text)) {
    switch (key) {
      case 'id':
      case 'deviceid':
        imei = raw
        break
      case 'timestamp': {
        const t = queryTime(raw)
        if (t === undefined)
          bad(
            'invalid_ts',
            `parameter 'timestamp' ${quote(raw)} must be seconds (or ms) since the epoch, or an RFC 3339 date-time with an offset such as 2026-11-23T08:00:00Z`,
          )
        else ts = t
        break
      }
      case 'lat':
        number(key, raw, 'lat')
        break
      case 'lon':
        number(key, raw, 'lon')
        break
      case 'location': {
        const parts = raw.split(',')
        if (parts.length !== 2)
          bad('invalid_value', `parameter 'location' must be lat,lon, got ${quote(raw)}`)
        else {
          number(key, parts[0], 'lat')
          number(key, parts[1], 'lon')
        }
        break
      }
      // Knots on the wire ([osmand-query]; the apps convert from m/s), km/h in the reading: x 1.852, exactly.
      case 'speed':
        number(key, raw, 'speed', KNOTS_TO_KMH)
        break
      case 'bearing':
      case 'heading':
        number(key, raw, 'heading')
        break
      case 'altitude':
        number(key, raw, 'alt')
        break
      case 'accuracy':
      case 'hdop':
      case 'batt':
        number(key, raw, key)
        break
      case 'charge': {
        const b = flag(raw)
        if (b === undefined)
          bad('invalid_value', `parameter 'charge' must be true or false, got ${quote(raw)}`)
        else values.charge = b
        break
      }
      case 'driverUniqueId':
        values.driverUniqueId = raw
        break
      default:
        values[key] = loose(raw)
    }
  }
  if (!imei) return { ok: false, imei: undefined, reason: 'invalid_value', detail: NO_ID_QUERY }
  if (problem) return { ok: false, imei, ...problem }
  return { ok: true, imei, reading: reading(ts, values) }
}

const NO_ID_QUERY =
  "parameter 'id' (or 'deviceid') is required: the device identifier, which is the imei it was registered with"
const NO_ID_JSON = 'device_id is required: the device identifier, which is the imei it was registered with'

/** Decodes an [osmand-json] body. */
export function decodeJson(body: Buffer): Decoded {
  let root: unknown
  try {
    root = JSON.parse(body.toString('utf8'))
  } catch (err) {
    return fail(undefined, 'malformed_json', notJson(err))
  }
  if (!isObject(root))
    return fail(undefined, 'not_an_object', `expected a JSON object, got ${typeName(root)}`)
  const id = root.device_id
  const imei =
    typeof id === 'string' ? id : typeof id === 'number' && Number.isSafeInteger(id) ? String(id) : ''
  if (imei === '') return fail(undefined, 'invalid_value', NO_ID_JSON)
  // Refused before anything copies it: JSON.stringify recurses, and a value nested 100,000 deep overflows it.
  if (deeperThan(root, LIMITS.maxDepth)) return fail(imei, 'too_deep', TOO_DEEP)
  const loc = root.location
  if (!isObject(loc)) return fail(imei, 'invalid_value', `location must be an object, got ${typeName(loc)}`)

  const values: Record<string, unknown> = Object.create(null)
  let ts: number | undefined
  if (loc.timestamp !== undefined && loc.timestamp !== null) {
    const t = parseTs(loc.timestamp)
    if (typeof t !== 'number') return fail(imei, 'invalid_ts', `location.timestamp: ${t.message}`)
    ts = t
  }
  const coords = loc.coords
  if (coords !== undefined && coords !== null) {
    if (!isObject(coords))
      return fail(imei, 'invalid_value', `location.coords must be an object, got ${typeName(coords)}`)
    // A field the location record sets to -1 is unknown (no speed, heading or accuracy from the fix): left out.
    const fields: Array<[string, string, 'required' | 'known' | 'any', DecimalFactor?]> = [
      ['latitude', 'lat', 'required'],
      ['longitude', 'lon', 'required'],
      // m/s on the wire, km/h in the reading: x 3.6, exactly.
      ['speed', 'speed', 'known', MPS_TO_KMH],
      ['heading', 'heading', 'known'],
      ['accuracy', 'accuracy', 'known'],
      ['altitude', 'alt', 'any'],
    ]
    for (const [name, key, when, factor] of fields) {
      const v = coords[name]
      if (v === undefined || v === null) {
        if (when === 'required')
          return fail(imei, 'invalid_value', `location.coords.${name} is required with coords`)
        continue
      }
      // JSON.parse reads 1e999 as Infinity: a number, but none a value can be.
      if (typeof v !== 'number' || !Number.isFinite(v))
        return fail(imei, 'invalid_value', `location.coords.${name} must be a number, got ${shown(v)}`)
      if (when === 'known' && v < 0) continue
      const n = factor ? timesDecimal(v, factor) : v
      if (!Number.isFinite(n))
        return fail(imei, 'invalid_value', `location.coords.${name} ${v} is out of any range`)
      values[key] = n
    }
  }
  // Kept as sent, under the names the record gives them; the judge refuses what is not a value.
  for (const name of ['is_moving', 'odometer', 'event', 'mock', 'alarm']) {
    const v = loc[name]
    if (v !== undefined && v !== null) values[name] = v
  }
  const activity = loc.activity
  if (isObject(activity) && activity.type !== undefined && activity.type !== null)
    values.activity = activity.type
  const battery = loc.battery
  if (isObject(battery)) {
    const level = battery.level
    if (level !== undefined && level !== null) {
      if (typeof level !== 'number' || !Number.isFinite(level))
        return fail(imei, 'invalid_value', `location.battery.level must be a number, got ${shown(level)}`)
      // 0 to 1 on the wire (-1: unknown), % in the reading, as the query form's batt.
      if (level >= 0) {
        const batt = timesDecimal(level, FRACTION_TO_PERCENT)
        if (!Number.isFinite(batt))
          return fail(imei, 'invalid_value', `location.battery.level ${level} is out of any range`)
        values.batt = batt
      }
    }
    if (battery.is_charging !== undefined && battery.is_charging !== null) values.charge = battery.is_charging
  }
  const extras = loc.extras
  if (isObject(extras)) {
    for (const key of Object.keys(extras)) {
      if (Object.hasOwn(values, key))
        return fail(imei, 'duplicate_key', `location.extras.${key} names a value the location already gives`)
      values[key] = extras[key]
    }
  }
  return { ok: true, imei, reading: reading(ts, values) }
}

function reading(ts: number | undefined, values: Record<string, unknown>): OsmAndReading {
  return ts === undefined ? { values } : { ts, msgId: msgIdOf(ts), values }
}

function fail(imei: string | undefined, reason: QuarantineReason, detail: string): Decoded {
  return { ok: false, imei, reason, detail }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** A decimal parameter as a number (times `factor` if given), or undefined if it is not one. */
function decimal(raw: string, factor?: DecimalFactor): number | undefined {
  if (!DECIMAL.test(raw)) return undefined
  const n = Number(raw)
  if (!Number.isFinite(n)) return undefined
  const v = factor ? timesDecimal(n, factor) : n
  return Number.isFinite(v) ? v : undefined
}

/** [osmand-query] `timestamp`: digits (seconds or ms, see SECONDS_BELOW) or RFC 3339 with an offset, in ms. */
function queryTime(raw: string): number | undefined {
  let t: ReturnType<typeof parseTs>
  if (DIGITS.test(raw)) {
    const n = Number(raw)
    t = parseTs(n < SECONDS_BELOW ? n * 1000 : n)
  } else t = parseTs(raw)
  return typeof t === 'number' ? t : undefined
}

function flag(raw: string): boolean | undefined {
  switch (raw.toLowerCase()) {
    case 'true':
    case '1':
      return true
    case 'false':
    case '0':
      return false
    default:
      return undefined
  }
}

/**
 * Another parameter's value: a number when it is written the way the number is (`933`, `12.5`, not `007` nor
 * `1.50`, which stay text, as does a 20-digit ICCID a double cannot hold), true or false, else the text.
 */
function loose(raw: string): Value {
  if (raw === 'true') return true
  if (raw === 'false') return false
  if (DECIMAL.test(raw)) {
    const n = Number(raw)
    if (String(n) === raw) return n
  }
  return raw
}

/** A JSON value in a message: its kind, or a number as it reads. */
function shown(v: unknown): string {
  return typeof v === 'number' ? String(v) : typeName(v)
}

/** A value in a message: quoted, and cut when long. */
function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? s.slice(0, 40) + '...' : s)
}

/**
 * Why the body is not JSON: the parser's message (which quotes the input), cut, and escaped as JSON escapes
 * text, so that no control character or unpaired surrogate reaches a log or the quarantine's text.
 */
function notJson(err: unknown): string {
  const m = (err as Error).message
  return `the body is not JSON: ${JSON.stringify(m.length > 200 ? m.slice(0, 200) + '...' : m).slice(1, -1)}`
}
