import { createHash } from 'node:crypto'

/**
 * The reading format of CONTRACT.md, shared by every gateway (to answer the device) and the ingest (to build
 * rows). Both run the same function on the same bytes, so a message is judged the same way at both ends.
 */

export type Value = number | boolean | string
export interface Reading {
  /** ms since the epoch */
  ts: number
  msgId: string
  values: Record<string, Value>
}

/**
 * Append-only: a local queue entry stores a refused message's reason as its index in this list
 * (queue/local/record.ts), so entries written before an upgrade are read back by position. Add at the end;
 * never remove or reorder.
 */
export const QUARANTINE_REASONS = [
  'malformed_json',
  'not_an_object',
  'empty_payload',
  'invalid_timestamp',
  'invalid_msg_id',
  'invalid_value',
  'no_values',
  'too_many_readings',
  'payload_too_large',
  'forbidden_topic',
  'unknown_topic',
  'database_rejected',
  'ingest_failed',
  'too_deep',
  'device_deleted',
] as const
export type QuarantineReason = (typeof QUARANTINE_REASONS)[number]

export interface Rejection {
  reason: QuarantineReason
  detail: string
  /** The offending reading (an array element) as JSON, or undefined when the whole payload is at fault. */
  element?: string
  index?: number
}

export interface Parsed {
  readings: Reading[]
  rejections: Rejection[]
  /** Valid readings counted by judgePayload, which builds none. */
  valid: number
}

/** Limits, each with why. */
export const LIMITS = {
  /** An array payload bigger than this is more likely a bug than a buffered backlog. */
  maxReadingsPerPayload: 10_000,
  /**
   * Nesting levels ([] and {} count one each). A payload needs 3 at most (array, reading, values); a nested
   * value up to this depth is a mistake in one reading, quarantined alone (invalid_value) while the others are
   * stored. Past it the payload is refused whole (too_deep) without being walked or re-serialized: JSON.parse
   * is iterative, but JSON.stringify, loggers and validators recurse, and 100,000 levels overflow their stack.
   */
  maxDepth: 16,
  /** Keys past this make a row a document, not a reading; store documents elsewhere. */
  maxValuesPerReading: 256,
  maxKeyLength: 128,
  /** Long strings bloat every row; 4 KiB fits VINs, NMEA sentences and error texts. */
  maxStringLength: 4096,
  maxMsgIdLength: 128,
  /** timestamptz holds far more, but a year past 9999 cannot be written back as ISO 8601. */
  maxTs: 253402300799999,
  minTs: 0,
} as const

/** The detail of every too_deep refusal. */
export const TOO_DEEP = `the payload nests deeper than ${LIMITS.maxDepth} levels; a reading is an object whose values are numbers, booleans or strings`

const RESERVED = new Set(['ts', 'msgId', 'values'])

/** Parses and validates a payload into readings (the ingest) and rejections. */
export function parsePayload(payload: Buffer | string, deviceId: string, receivedAt: number): Parsed {
  return run(payload, deviceId, receivedAt, true)
}

/**
 * The same judgement without building readings: `valid` counts them. What a gateway needs to answer its
 * device, at a fraction of the allocations.
 */
export function judgePayload(payload: Buffer | string): Parsed {
  return run(payload, '', 0, false)
}

function run(payload: Buffer | string, deviceId: string, receivedAt: number, build: boolean): Parsed {
  const out: Parsed = { readings: [], rejections: [], valid: 0 }
  let doc: unknown
  try {
    // V8's JSON.parse is iterative: any depth the byte limit lets in parses without touching the stack.
    doc = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'))
  } catch (err) {
    out.rejections.push({ reason: 'malformed_json', detail: (err as Error).message })
    return out
  }
  if (Array.isArray(doc)) {
    // The length first: a huge array is refused before a single element is looked at.
    if (doc.length === 0) {
      out.rejections.push({ reason: 'empty_payload', detail: 'the array holds no readings' })
    } else if (doc.length > LIMITS.maxReadingsPerPayload) {
      out.rejections.push({
        reason: 'too_many_readings',
        detail: `the array holds ${doc.length} readings; at most ${LIMITS.maxReadingsPerPayload} per message`,
      })
    } else {
      for (let i = 0; i < doc.length; i++) {
        if (!normalize(doc[i], deviceId, receivedAt, out, i, build)) break
      }
    }
  } else {
    normalize(doc, deviceId, receivedAt, out, undefined, build)
  }
  return out
}

/**
 * Records a rejection; false when the payload turned out too deep and is refused whole (read no further).
 * Depth is measured here, on the way out, not up front: a valid reading is never deeper than 3, so every
 * payload past LIMITS.maxDepth holds a rejected reading (or is one), and valid readings pay nothing for it.
 */
function reject(
  out: Parsed,
  reason: QuarantineReason,
  detail: string,
  el: unknown,
  index: number | undefined,
): boolean {
  if (deeperThan(el, index === undefined ? LIMITS.maxDepth : LIMITS.maxDepth - 1)) {
    out.readings.length = 0
    out.rejections.length = 0
    out.valid = 0
    out.rejections.push({ reason: 'too_deep', detail: TOO_DEEP })
    return false
  }
  out.rejections.push(
    index === undefined ? { reason, detail } : { reason, detail, element: JSON.stringify(el), index },
  )
  return true
}

/**
 * Whether `v` nests more than `limit` levels ([] and {} count one each): without recursion, so any depth is
 * safe, and without looking past the limit.
 */
export function deeperThan(v: unknown, limit: number): boolean {
  if (v === null || typeof v !== 'object') return false
  if (limit < 1) return true
  const stack: object[] = [v]
  const depths: number[] = [1]
  while (stack.length > 0) {
    const o = stack.pop() as object
    const d = depths.pop() as number
    for (const x of Array.isArray(o) ? o : Object.values(o)) {
      if (x === null || typeof x !== 'object') continue
      if (d === limit) return true
      stack.push(x)
      depths.push(d + 1)
    }
  }
  return false
}

/** Judges one reading into `out`; false when the whole payload is refused and nothing more is to be read. */
function normalize(
  el: unknown,
  deviceId: string,
  receivedAt: number,
  out: Parsed,
  index: number | undefined,
  build: boolean,
): boolean {
  const where = index === undefined ? '' : `reading ${index}: `
  if (el === null || typeof el !== 'object' || Array.isArray(el)) {
    return reject(out, 'not_an_object', `${where}expected a JSON object, got ${typeName(el)}`, el, index)
  }
  const obj = el as Record<string, unknown>
  let ts: number
  const rawTs = obj.ts
  if (rawTs === undefined || rawTs === null) ts = receivedAt
  else if (typeof rawTs === 'number') {
    if (!Number.isFinite(rawTs) || rawTs < LIMITS.minTs || rawTs > LIMITS.maxTs) {
      return reject(out, 'invalid_timestamp', `${where}ts ${rawTs} is not ms since the epoch`, el, index)
    }
    ts = Math.floor(rawTs)
  } else if (typeof rawTs === 'string') {
    ts = Date.parse(rawTs)
    if (!Number.isFinite(ts) || ts < LIMITS.minTs || ts > LIMITS.maxTs) {
      return reject(out, 'invalid_timestamp', `${where}ts ${quote(rawTs)} is not ISO 8601`, el, index)
    }
  } else {
    return reject(
      out,
      'invalid_timestamp',
      `${where}ts must be ms since the epoch or ISO 8601, got ${typeName(rawTs)}`,
      el,
      index,
    )
  }

  // Judging only (a gateway answering its device), nothing is copied: the checks read the parsed object.
  const values: Record<string, Value> | undefined = build ? {} : undefined
  let count = 0
  const nested = obj.values
  if (nested !== undefined) {
    if (nested === null || typeof nested !== 'object' || Array.isArray(nested)) {
      return reject(
        out,
        'invalid_value',
        `${where}values must be an object, got ${typeName(nested)}`,
        el,
        index,
      )
    }
    for (const key in nested as Record<string, unknown>) {
      // Counted as they come, so a reading with a million keys is refused at the first one too many.
      if (++count > LIMITS.maxValuesPerReading) return tooManyValues(out, where, el, index)
      const problem = checkValue(key, (nested as Record<string, unknown>)[key])
      if (problem) return reject(out, 'invalid_value', where + problem, el, index)
      if (values) values[key] = (nested as Record<string, Value>)[key]
    }
  }
  for (const key in obj) {
    if (RESERVED.has(key)) continue
    if (++count > LIMITS.maxValuesPerReading) return tooManyValues(out, where, el, index)
    const problem = checkValue(key, obj[key])
    if (problem) return reject(out, 'invalid_value', where + problem, el, index)
    if (values) values[key] = obj[key] as Value
  }
  if (count === 0) {
    return reject(out, 'no_values', `${where}the reading has no values besides ts and msgId`, el, index)
  }
  const position = checkPosition(values ?? positionOf(obj))
  if (position) return reject(out, 'invalid_value', where + position, el, index)

  let msgId: string
  const rawId = obj.msgId
  if (rawId === undefined || rawId === null) msgId = values ? deriveMsgId(deviceId, ts, values) : ''
  else if (typeof rawId === 'string' || (typeof rawId === 'number' && Number.isFinite(rawId))) {
    msgId = String(rawId)
    if (msgId.length === 0 || msgId.length > LIMITS.maxMsgIdLength || msgId.includes('\u0000')) {
      return reject(
        out,
        'invalid_msg_id',
        `${where}msgId must be 1 to ${LIMITS.maxMsgIdLength} characters`,
        el,
        index,
      )
    }
  } else {
    return reject(
      out,
      'invalid_msg_id',
      `${where}msgId must be a string or a number, got ${typeName(rawId)}`,
      el,
      index,
    )
  }
  if (values) out.readings.push({ ts, msgId, values })
  else out.valid++
  return true
}

function tooManyValues(out: Parsed, where: string, el: unknown, index: number | undefined): boolean {
  const detail = `${where}more than ${LIMITS.maxValuesPerReading} values; at most ${LIMITS.maxValuesPerReading} per reading`
  return reject(out, 'invalid_value', detail, el, index)
}

/** lat and lon wherever the reading put them, for checking without copying the values. */
function positionOf(obj: Record<string, unknown>): Record<string, Value> {
  const nested = obj.values as Record<string, Value> | undefined
  return { lat: (nested?.lat ?? obj.lat) as Value, lon: (nested?.lon ?? obj.lon) as Value }
}

function checkValue(key: string, v: unknown): string | undefined {
  if (key.length === 0 || key.length > LIMITS.maxKeyLength || key.includes('\u0000')) {
    return `key ${quote(key)} must be 1 to ${LIMITS.maxKeyLength} characters`
  }
  // Assigned to a plain object this name sets its prototype: the value would vanish and the reading be stored
  // without it (or with no values at all).
  if (key === '__proto__') return 'the key "__proto__" cannot name a value'
  switch (typeof v) {
    case 'number':
      // JSON cannot carry NaN or Infinity, but a number past float64's range parses to Infinity.
      return Number.isFinite(v) ? undefined : `${key}: ${v} is not a finite number`
    case 'boolean':
      return undefined
    case 'string':
      if (v.length > LIMITS.maxStringLength)
        return `${key}: strings are limited to ${LIMITS.maxStringLength} characters`
      // PostgreSQL's jsonb cannot hold U+0000.
      if (v.includes('\u0000')) return `${key}: strings cannot contain U+0000`
      return undefined
    default:
      return `${key} is ${typeName(v)}; values must be a number, boolean or string`
  }
}

/** A string from the payload, cut short: a detail goes to logs and to the device, not the whole payload. */
function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s)
}

function checkPosition(values: Record<string, Value>): string | undefined {
  const { lat, lon } = values
  if (lat !== undefined && (typeof lat !== 'number' || lat < -90 || lat > 90)) {
    return `lat ${typeof lat === 'string' ? quote(lat) : lat} must be a number of degrees from -90 to 90`
  }
  if (lon !== undefined && (typeof lon !== 'number' || lon < -180 || lon > 180)) {
    return `lon ${typeof lon === 'string' ? quote(lon) : lon} must be a number of degrees from -180 to 180`
  }
  return undefined
}

/** A reading without msgId gets one from what makes it itself, so a resent copy dedups like an explicit id. */
export function deriveMsgId(deviceId: string, ts: number, values: Record<string, Value>): string {
  const keys = Object.keys(values).sort()
  const h = createHash('sha256').update(deviceId).update('\u0000').update(String(ts))
  for (const k of keys) h.update('\u0000').update(k).update('\u0000').update(JSON.stringify(values[k]))
  return 'h:' + h.digest('base64url').slice(0, 22)
}

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}
