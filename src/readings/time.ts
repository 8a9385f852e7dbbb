/**
 * Time as a contract: the one parser of timestamps, for a reading's `ts` and the API's `from`/`to`.
 *
 * Accepted, and nothing else:
 * - a JSON number: ms since the Unix epoch (UTC). A fraction is truncated to the ms, as JavaScript's Date does
 *   (`1732330000123.9` is `1732330000123`): devices that compute ms as a float (`time.time() * 1000`) are
 *   common, and refusing them would gain nothing. With `unit: 's'` the number is seconds since the epoch
 *   instead (for firmware that only knows seconds, when a documented option says so): it is read to the
 *   microsecond first, because a binary float cannot hold most decimal fractions (1732330000.123 is
 *   1732330000.12299990...), then truncated to the ms like every other form.
 * - a string in RFC 3339's `date-time` (section 5.6) with an explicit offset: `2026-11-23T08:00:00Z`,
 *   `2026-11-23T10:00:00.250+02:00`. As 5.6 allows: `t` and `z` in lower case, and a space instead of `T`
 *   (its NOTE, for readability; PostgreSQL's own `+00` offset still lacks the `:mm` 5.6 requires). 1 to 9
 *   fractional digits (ns), truncated to the ms. `-00:00` (UTC, local offset unknown, section 4.3) is UTC.
 *   Refused: no offset (`2026-11-23T08:00:00` means a different instant in every time zone), a month or day
 *   that does not exist (`2026-02-29`), hour 24, and second 60: a leap second has no ms since the epoch of its
 *   own (POSIX time skips it), so a device that saw one should send :59.999 or the next second.
 * - in a query string (`parseTimeQuery`) the number form is digits: `from=1732330000123`.
 *
 * Everything is computed here by arithmetic on the fields, never by `Date.parse` (lenient: `"1"` is the year
 * 2001, `"Nov 23 2026"` a local midnight) and never by anything that reads the server's time zone, so the result
 * is the same under any `TZ`. The range is 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z: the Unix
 * epoch up to the last instant RFC 3339 (four-digit years) can write back.
 */

/** What a number `ts` counts. */
export type TsUnit = 'ms' | 's'

/** Earliest accepted instant, ms since the epoch. */
export const TS_MIN = 0
/** Latest accepted instant, 9999-12-31T23:59:59.999Z: past it there is no RFC 3339 form to answer with. */
export const TS_MAX = 253_402_300_799_999

/** A refused timestamp: `message` says what was wrong and shows the accepted forms. */
export interface TsRefusal {
  readonly message: string
}

const RFC3339_EXAMPLES = '"2026-11-23T08:00:00Z" or "2026-11-23T10:00:00.250+02:00"'

/** The accepted forms of a reading's `ts`, for messages and documentation. */
export function tsForms(unit: TsUnit = 'ms'): string {
  const number =
    unit === 's' ? 'seconds since the epoch (1732330000.123)' : 'ms since the epoch (1732330000123)'
  return `a number of ${number} or an RFC 3339 date-time with an offset (${RFC3339_EXAMPLES})`
}

/** The accepted forms of `from`/`to`, for messages and documentation. */
export const QUERY_TIME_FORMS = `ms since the epoch (1732330000123) or an RFC 3339 date-time with an offset (${RFC3339_EXAMPLES.replaceAll('"', '')}; in a URL, write + as %2B)`

/**
 * A reading's `ts` as sent in JSON: ms since the epoch, or a refusal. What an absent or null `ts` means is the
 * caller's to decide (here, null is refused like any other non-timestamp). Nothing is allocated unless it is
 * refused: this runs for every reading.
 */
export function parseTs(raw: unknown, unit: TsUnit = 'ms'): number | TsRefusal {
  if (typeof raw === 'number') {
    const r = numberMs(raw, unit)
    return typeof r === 'number' ? r : refuse(`ts ${raw}${r}; send ${tsForms(unit)}`)
  }
  if (typeof raw === 'string') {
    const r = stringMs(raw, false)
    return typeof r === 'number' ? r : refuse(`ts ${JSON.stringify(clip(raw))}${r}; send ${tsForms(unit)}`)
  }
  return refuse(`ts is ${typeName(raw)}; send ${tsForms(unit)}`)
}

/**
 * A query parameter (`from`, `to`; `name` is for the message): digits are ms since the epoch, anything else
 * must be RFC 3339 as above.
 */
export function parseTimeQuery(name: string, raw: string): number | TsRefusal {
  const r = /^\d+$/.test(raw) ? numberMs(Number(raw), 'ms') : stringMs(raw, true)
  return typeof r === 'number' ? r : refuse(`${name}=${clip(raw)}${r}; send ${QUERY_TIME_FORMS}`)
}

// Below, a string result is what is wrong, to follow the value in the message.

function numberMs(n: number, unit: TsUnit): number | string {
  const ms = unit === 's' ? Math.floor(Math.round(n * 1e6) / 1000) : Math.floor(n)
  if (ms >= TS_MIN && ms <= TS_MAX) return ms
  return (
    ' is outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z ' +
    `(${unit === 's' ? `0 to ${TS_MAX / 1000} seconds` : `0 to ${TS_MAX} ms`})`
  )
}

// RFC 3339 section 5.6 date-time, with the offset required and the fraction bounded to ns.
const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|([+-])(\d{2}):(\d{2}))$/
const NO_OFFSET = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/
const QUERY_PLUS = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)? \d{2}:\d{2}$/
const LONG_FRACTION = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}\.\d{10,}/
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/
const BAD_OFFSET = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}(\d{2})?$/

function stringMs(s: string, query: boolean): number | string {
  const quick = plainDateTime(s)
  if (quick >= 0) return quick
  const m = DATE_TIME.exec(s)
  if (!m) return ' ' + whyNot(s, query)
  const year = Number(m[1])
  const month = Number(m[2])
  const day = Number(m[3])
  const hour = Number(m[4])
  const minute = Number(m[5])
  const second = Number(m[6])
  if (month < 1 || month > 12) return `: there is no month ${m[2]}`
  const days = daysInMonth(year, month)
  if (day < 1 || day > days) return `: ${m[1]}-${m[2]} has days 01 to ${days}`
  if (hour > 23) return `: hour ${m[4]} is past 23`
  if (minute > 59) return `: minute ${m[5]} is past 59`
  if (second === 60)
    return ': second 60 (a leap second) has no ms since the epoch of its own; use :59.999 or the next second'
  if (second > 59) return `: second ${m[6]} is past 59`
  let offsetMin = 0
  if (m[9] !== undefined) {
    const oh = Number(m[10])
    const om = Number(m[11])
    if (oh > 23 || om > 59) return `: offset ${m[9]}${m[10]}:${m[11]} is not a UTC offset (at most ±23:59)`
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om)
  }
  // Digits past the third are truncated, as the number form's fraction is.
  const fractionMs = m[7] === undefined ? 0 : Number((m[7] + '00').slice(0, 3))
  const ms =
    daysFromCivil(year, month, day) * 86_400_000 +
    ((hour * 60 + minute - offsetMin) * 60 + second) * 1000 +
    fractionMs
  if (ms < TS_MIN || ms > TS_MAX)
    return ': the instant is outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z'
  return ms
}

/**
 * The accepted date-time read by character codes, for a reading's ts on the gateway's hot path: DATE_TIME's
 * regex allocates a dozen substrings per call, and a reading with an RFC 3339 ts paid ~15% more to be judged
 * for them. Returns the ms, or -1 for anything that is not plainly a valid instant in DATE_TIME's form: the
 * regex path then accepts nothing more (it is the definition) and says what is wrong.
 */
function plainDateTime(s: string): number {
  const n = s.length
  if (n < 20) return -1
  const year = digits(s, 0, 4)
  const month = digits(s, 5, 2)
  const day = digits(s, 8, 2)
  const hour = digits(s, 11, 2)
  const minute = digits(s, 14, 2)
  const second = digits(s, 17, 2)
  const t = s.charCodeAt(10)
  if (
    (year | month | day | hour | minute | second) < 0 ||
    s.charCodeAt(4) !== 0x2d ||
    s.charCodeAt(7) !== 0x2d ||
    (t !== 0x54 && t !== 0x74 && t !== 0x20) ||
    s.charCodeAt(13) !== 0x3a ||
    s.charCodeAt(16) !== 0x3a
  )
    return -1
  let i = 19
  let fractionMs = 0
  if (s.charCodeAt(i) === 0x2e) {
    const start = ++i
    for (let c = s.charCodeAt(i) - 0x30; c >= 0 && c <= 9; c = s.charCodeAt(++i) - 0x30)
      if (i - start < 3) fractionMs = fractionMs * 10 + c
    const count = i - start
    if (count === 0 || count > 9) return -1
    for (let k = count; k < 3; k++) fractionMs *= 10
  }
  let offsetMin = 0
  const z = s.charCodeAt(i)
  if (z === 0x5a || z === 0x7a) {
    if (i + 1 !== n) return -1
  } else if (z === 0x2b || z === 0x2d) {
    const oh = digits(s, i + 1, 2)
    const om = digits(s, i + 4, 2)
    if (i + 6 !== n || s.charCodeAt(i + 3) !== 0x3a || oh < 0 || om < 0 || oh > 23 || om > 59) return -1
    offsetMin = (z === 0x2d ? -1 : 1) * (oh * 60 + om)
  } else return -1
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return -1
  if (hour > 23 || minute > 59 || second > 59) return -1
  const ms =
    daysFromCivil(year, month, day) * 86_400_000 +
    ((hour * 60 + minute - offsetMin) * 60 + second) * 1000 +
    fractionMs
  return ms >= TS_MIN && ms <= TS_MAX ? ms : -1
}

/** The `count` ASCII digits at `at` as a number, or -1. */
function digits(s: string, at: number, count: number): number {
  let v = 0
  for (let i = at; i < at + count; i++) {
    const c = s.charCodeAt(i) - 0x30
    if (!(c >= 0 && c <= 9)) return -1
    v = v * 10 + c
  }
  return v
}

/** The closest reason a string is not an accepted date-time, so the sender knows what to fix. */
function whyNot(s: string, query: boolean): string {
  if (QUERY_PLUS.test(s))
    return query
      ? 'has a space where the offset sign goes: a + in a URL means a space, write it as %2B'
      : 'has a space where the offset sign goes'
  if (!query && /^\d+(\.\d+)?$/.test(s))
    return 'is a string of digits: a number goes as a JSON number, not a string'
  if (NO_OFFSET.test(s))
    return 'has no UTC offset, so it means a different instant in every time zone: add Z or ±hh:mm'
  if (DATE_ONLY.test(s)) return 'is a date without a time of day'
  if (LONG_FRACTION.test(s)) return 'has more than 9 fractional digits'
  if (BAD_OFFSET.test(s)) return 'has an offset that is not ±hh:mm'
  return 'is not an RFC 3339 date-time'
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
}

/**
 * Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil): plain arithmetic, so
 * neither the server's time zone nor Date's two-digit-year rule (Date.UTC(70, 0) is 1970) can touch it.
 */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year
  const era = Math.floor(y / 400)
  const yoe = y - era * 400
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy
  return era * 146_097 + doe - 719_468
}

/** Enough of a long input to recognise it in a message. */
const clip = (s: string) => (s.length > 40 ? s.slice(0, 40) + '...' : s)

function refuse(message: string): TsRefusal {
  return { message }
}

/** The kind of a JSON value, for a message: `an array`, `a string`, `null`. */
export function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}
