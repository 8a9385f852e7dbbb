import { isUtf8 } from 'node:buffer'
import { createHash } from 'node:crypto'
import { unstorable } from '../lib/text.js'
import { parseTs, typeName } from './time.js'

/**
 * The reading format of CONTRACT.md and docs/guarantees.md ("The reading contract"): the one rule, applied by
 * every gateway (judgePayload, to answer the device) and by the ingest (parsePayload, to build rows). Both run
 * the same function on the same bytes, so what a gateway acks as valid is never refused later for a reason it
 * could have seen; only the database itself may still refuse a row. (A payload the gateway judged all valid
 * may reach the ingest's fast path instead, extract.ts, which judges nothing and builds what parsePayload
 * would.)
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
 * never remove or reorder. A rename keeps the position (entries written before read back as the new name) and
 * is listed in RENAMED_REASONS.
 */
export const QUARANTINE_REASONS = [
  'malformed_json',
  'not_an_object',
  'empty_payload',
  'invalid_ts',
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
  'duplicate_key',
  'reserved_key',
  'unstorable_text',
  'unsupported_encoding',
  'malformed_encoding',
  'device_deleted',
  // Device protocols (src/gateway/<protocol>): a binary packet whose checksum or framing is wrong, kept as sent.
  'bad_crc',
  'malformed_packet',
] as const
export type QuarantineReason = (typeof QUARANTINE_REASONS)[number]

/**
 * Former names of reasons, for what still carries one: a RabbitMQ message published by an older gateway names
 * its reason as a string. (Stored quarantine rows were renamed by a migration, store/migrations.)
 */
export const RENAMED_REASONS: ReadonlyMap<string, QuarantineReason> = new Map([
  ['invalid_timestamp', 'invalid_ts'],
])

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
} as const

/** The detail of every too_deep refusal. */
export const TOO_DEEP = `the payload nests deeper than ${LIMITS.maxDepth} levels; a reading is an object whose values are numbers, booleans or strings`

/**
 * Names a value cannot have. `ts`, `msgId` and `values` are the reading's own fields: at the top level they are
 * not values, and inside `values` they are refused, so a reading means the same in either form. `__proto__`,
 * `constructor` and `prototype` name parts of every JavaScript object: a reading holding one would be a
 * prototype-pollution hazard to whatever consumes the data (a deep merge in a webhook's receiver, a script),
 * and `__proto__` cannot even be assigned as a plain key. No sensor needs these names; refusing them says so,
 * where keeping them would hand the hazard on.
 *
 * `own`: ts, msgId, values; `js`: __proto__, constructor, prototype; `value`: any other name.
 */
type Name = 'value' | 'own' | 'js'

/**
 * What a key names (see Name). A switch, not a Set: it runs for every key of every reading, and comparing a key
 * JSON.parse interned with six constants costs less than hashing it.
 */
function nameOf(key: string): Name {
  switch (key) {
    case 'ts':
    case 'msgId':
    case 'values':
      return 'own'
    case '__proto__':
    case 'constructor':
    case 'prototype':
      return 'js'
    default:
      return 'value'
  }
}

/** Whether a reading may hold a value under this key (not ts, msgId, values, __proto__, constructor, prototype). */
export function isValueName(key: string): boolean {
  return nameOf(key) === 'value'
}

/**
 * Parses and validates a payload into readings (the ingest) and rejections. `receivedAt` stamps the readings
 * without `ts`; their derived msgIds come from it, or from `idempotencyKey` when the request had one.
 */
export function parsePayload(
  payload: Buffer | string,
  deviceId: string,
  receivedAt: number,
  idempotencyKey?: string,
): Parsed {
  return run(payload, new Context(deviceId, receivedAt, idempotencyKey, true))
}

/**
 * The same judgement without building readings: `valid` counts them. What a gateway needs to answer its
 * device, at a fraction of the allocations.
 */
export function judgePayload(payload: Buffer | string): Parsed {
  return run(payload, new Context('', 0, undefined, false))
}

/** One payload's judgement: what it needs to know, and what it found. */
class Context {
  readonly out: Parsed = { readings: [], rejections: [], valid: 0 }
  /** Whether the text holds a `\u` escape: without one no string in it can hold text PostgreSQL cannot store. */
  escapes = false
  /** Derived msgIds of the readings without ts so far, with their count: identical ones are told apart. */
  stamped: Map<string, number> | undefined

  constructor(
    readonly deviceId: string,
    readonly receivedAt: number,
    readonly idempotencyKey: string | undefined,
    readonly build: boolean,
  ) {}
}

function run(payload: Buffer | string, ctx: Context): Parsed {
  const out = ctx.out
  const text = typeof payload === 'string' ? payload : payload.toString('utf8')
  let doc: unknown
  try {
    // V8's JSON.parse is iterative: any depth the byte limit lets in parses without touching the stack.
    doc = JSON.parse(text)
  } catch (err) {
    out.rejections.push({ reason: 'malformed_json', detail: notJson(payload, err as Error) })
    return out
  }
  // U+0000 and unpaired surrogates can only come from a \u escape: raw control characters are not JSON, and
  // UTF-8 has no form for a surrogate (such bytes decode to U+FFFD). One scan of the text spares every key and
  // string the check in the usual payload.
  ctx.escapes = text.includes('\\u')
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
        if (!normalize(ctx, doc[i], i)) break
      }
    }
  } else {
    normalize(ctx, doc, undefined)
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

/** What is wrong with a key or a value: built only when something is. */
interface Problem {
  reason: QuarantineReason
  detail: string
}

/** Judges one reading into `ctx.out`; false when the whole payload is refused and nothing more is to be read. */
function normalize(ctx: Context, el: unknown, index: number | undefined): boolean {
  const out = ctx.out
  const where = index === undefined ? '' : `reading ${index}: `
  if (el === null || typeof el !== 'object' || Array.isArray(el)) {
    return reject(out, 'not_an_object', `${where}expected a JSON object, got ${typeName(el)}`, el, index)
  }
  const obj = el as Record<string, unknown>
  // Absent or null: stamped with the time the platform first received it (the envelope's, kept on redelivery).
  const rawTs = obj.ts
  let ts = ctx.receivedAt
  if (rawTs !== undefined && rawTs !== null) {
    const t = parseTs(rawTs)
    if (typeof t !== 'number') return reject(out, 'invalid_ts', where + t.message, el, index)
    ts = t
  }

  // Judging only (a gateway answering its device), nothing is copied: the checks read the parsed object.
  const values: Record<string, Value> | undefined = ctx.build ? {} : undefined
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
    const inner = nested as Record<string, unknown>
    for (const key in inner) {
      // Counted as they come, so a reading with a million keys is refused at the first one too many.
      if (++count > LIMITS.maxValuesPerReading) return tooManyValues(out, where, el, index)
      const problem =
        keyProblem(ctx, key) ??
        (nameOf(key) !== 'value' ? specialKey(key, true) : undefined) ??
        valueProblem(ctx, key, inner[key])
      if (problem) return reject(out, problem.reason, where + problem.detail, el, index)
      if (values) values[key] = inner[key] as Value
    }
  }
  for (const key in obj) {
    const name = nameOf(key)
    if (name !== 'value') {
      if (name === 'own') continue
      const p = specialKey(key, false)
      return reject(out, p.reason, where + p.detail, el, index)
    }
    if (++count > LIMITS.maxValuesPerReading) return tooManyValues(out, where, el, index)
    // The same name in both places would leave one of the two values unstored, or a choice between them that
    // the sender did not make.
    const problem =
      keyProblem(ctx, key) ??
      (nested !== undefined && Object.hasOwn(nested as object, key) ? duplicate(key) : undefined) ??
      valueProblem(ctx, key, obj[key])
    if (problem) return reject(out, problem.reason, where + problem.detail, el, index)
    if (values) values[key] = obj[key] as Value
  }
  if (count === 0) {
    return reject(out, 'no_values', `${where}the reading has no values besides ts and msgId`, el, index)
  }
  // No key is in both places (refused above), so lat and lon are wherever the reading put them.
  const inValues = nested as Record<string, unknown> | undefined
  const position = values
    ? checkPosition(values.lat, values.lon)
    : checkPosition(inValues?.lat ?? obj.lat, inValues?.lon ?? obj.lon)
  if (position) return reject(out, 'invalid_value', where + position, el, index)

  let msgId = ''
  const rawId = obj.msgId
  if (rawId === undefined || rawId === null) {
    if (values)
      msgId =
        rawTs === undefined || rawTs === null
          ? stampedId(ctx, values, index)
          : deriveMsgId(ctx.deviceId, ts, values)
  } else if (typeof rawId === 'string' || (typeof rawId === 'number' && Number.isFinite(rawId))) {
    msgId = String(rawId)
    if (msgId.length === 0 || msgId.length > LIMITS.maxMsgIdLength) {
      return reject(
        out,
        'invalid_msg_id',
        `${where}msgId must be 1 to ${LIMITS.maxMsgIdLength} characters`,
        el,
        index,
      )
    }
    const bad = ctx.escapes ? unstorable(msgId) : undefined
    if (bad) return reject(out, 'unstorable_text', `${where}msgId holds ${bad}${CANNOT_STORE}`, el, index)
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

const CANNOT_STORE = ', which PostgreSQL cannot store; remove it or send it escaped as ordinary text'

function tooManyValues(out: Parsed, where: string, el: unknown, index: number | undefined): boolean {
  const detail = `${where}more than ${LIMITS.maxValuesPerReading} values; at most ${LIMITS.maxValuesPerReading} per reading`
  return reject(out, 'invalid_value', detail, el, index)
}

function keyProblem(ctx: Context, key: string): Problem | undefined {
  if (key.length === 0 || key.length > LIMITS.maxKeyLength) {
    return {
      reason: 'invalid_value',
      detail: `key ${quote(key)} must be 1 to ${LIMITS.maxKeyLength} characters`,
    }
  }
  const bad = ctx.escapes ? unstorable(key) : undefined
  return bad
    ? { reason: 'unstorable_text', detail: `the key ${quote(key)} holds ${bad}${CANNOT_STORE}` }
    : undefined
}

function specialKey(key: string, inValues: boolean): Problem {
  if (nameOf(key) === 'own') {
    return {
      reason: 'reserved_key',
      detail: `"${key}" inside values: ts, msgId and values are the reading's own fields; send ts and msgId beside values, not in it`,
    }
  }
  return {
    reason: 'reserved_key',
    detail: `the key "${key}"${inValues ? ' inside values' : ''} is reserved: __proto__, constructor and prototype cannot name a value`,
  }
}

function duplicate(key: string): Problem {
  return {
    reason: 'duplicate_key',
    detail: `${quote(key)} is both a top-level value and in values; send each value once, in one of the two places`,
  }
}

function valueProblem(ctx: Context, key: string, v: unknown): Problem | undefined {
  switch (typeof v) {
    case 'number':
      // JSON cannot carry NaN or Infinity, but a number past float64's range parses to Infinity.
      return Number.isFinite(v) ? undefined : invalid(`${key}: ${v} is not a finite number`)
    case 'boolean':
      return undefined
    case 'string': {
      if (v.length > LIMITS.maxStringLength)
        return invalid(`${key}: strings are limited to ${LIMITS.maxStringLength} characters`)
      const bad = ctx.escapes ? unstorable(v) : undefined
      return bad
        ? { reason: 'unstorable_text', detail: `${key}: the string holds ${bad}${CANNOT_STORE}` }
        : undefined
    }
    default:
      return invalid(`${key} is ${typeName(v)}; values must be a number, boolean or string`)
  }
}

const invalid = (detail: string): Problem => ({ reason: 'invalid_value', detail })

/** A string from the payload, cut short: a detail goes to logs and to the device, not the whole payload. */
function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s)
}

/** lat and lon wherever the reading put them: judging reads them from the parsed object, allocating nothing. */
function checkPosition(lat: unknown, lon: unknown): string | undefined {
  if (lat !== undefined && (typeof lat !== 'number' || lat < -90 || lat > 90)) {
    return `lat ${typeof lat === 'string' ? quote(lat) : lat} must be a number of degrees from -90 to 90`
  }
  if (lon !== undefined && (typeof lon !== 'number' || lon < -180 || lon > 180)) {
    return `lon ${typeof lon === 'string' ? quote(lon) : lon} must be a number of degrees from -180 to 180`
  }
  return undefined
}

/**
 * A reading with ts but without msgId gets one from what makes it itself (device, ts, content), so a copy sent
 * again, by any way and at any time, dedups like an explicit id.
 */
export function deriveMsgId(deviceId: string, ts: number, values: Record<string, Value>): string {
  return 'h:' + contentHash(createHash('sha256').update(deviceId).update('\u0000').update(String(ts)), values)
}

/**
 * A reading with neither ts nor msgId is known only by its receipt: the request's Idempotency-Key when it had
 * one (a retry of the request, however late, is the same reading), else the time the platform first received
 * it, which the envelope keeps on every redelivery inside the platform (so a new request is a new reading).
 * The one formula without a key is deriveMsgId's with the receipt time, as before there was a key. Identical
 * readings in one message are told apart by their order: the second is `<id>#2`.
 */
function stampedId(ctx: Context, values: Record<string, Value>, index: number | undefined): string {
  const key = ctx.idempotencyKey
  const id =
    key === undefined
      ? deriveMsgId(ctx.deviceId, ctx.receivedAt, values)
      : 'k:' +
        contentHash(
          createHash('sha256').update(ctx.deviceId).update('\u0000idempotency-key\u0000').update(key),
          values,
        )
  if (index === undefined) return id
  const stamped = (ctx.stamped ??= new Map())
  const n = (stamped.get(id) ?? 0) + 1
  stamped.set(id, n)
  return n === 1 ? id : `${id}#${n}`
}

function contentHash(h: ReturnType<typeof createHash>, values: Record<string, Value>): string {
  const keys = Object.keys(values).sort()
  for (const k of keys) h.update('\u0000').update(k).update('\u0000').update(JSON.stringify(values[k]))
  return h.digest('base64url').slice(0, 22)
}

/**
 * Why a payload is not JSON, without its raw bytes: binary is described (its size, first bytes in hex, what it
 * looks like) and anything unprintable in the parser's message (which quotes the input) is escaped, so the
 * detail is safe to log, to answer and to store as text.
 */
function notJson(payload: Buffer | string, err: Error): string {
  if (typeof payload !== 'string' && !isUtf8(payload)) {
    const head = [...payload.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ')
    return `${payload.length} bytes of binary, not UTF-8 text (starting ${head}${looksLike(payload)})`
  }
  const m = err.message.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  return m.length > 200 ? `${m.slice(0, 200)}...` : m
}

const UNPRINTABLE =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
  /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** A hint when binary is a known compressed format sent undeclared. */
function looksLike(b: Buffer): string {
  const what =
    b[0] === 0x1f && b[1] === 0x8b
      ? 'gzip'
      : (b[0] & 0x0f) === 8 && ((b[0] << 8) | b[1]) % 31 === 0
        ? 'zlib (deflate)'
        : b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd
          ? 'zstd'
          : undefined
  return what === undefined
    ? ''
    : `: ${what} data; send JSON uncompressed, or over HTTP declare it with Content-Encoding`
}
