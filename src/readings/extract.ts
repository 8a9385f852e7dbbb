import { type Value, deriveMsgId } from './index.js'
import { parseTs } from './time.js'

/**
 * The ingest's fast path for a payload its gateway already judged (the queue entry says every reading in it
 * was valid): the readings read straight from the bytes, without JSON.parse, and their values' JSON text for
 * the COPY without JSON.stringify. The ingest re-parsing and re-serializing each payload cost about as much as
 * the gateway judging it; the bytes already hold the text a reading is stored as, once the form is plain.
 *
 * Nothing here judges: the judgement is the gateway's (judgePayload, the one rule), and this only reproduces
 * what parsePayload followed by JSON.stringify would make of the same bytes. It takes the plain forms, where
 * that is provably byte for byte the same, and declines (undefined) everything else, which then takes
 * parsePayload as before:
 * - an object, or an array of objects, with JSON whitespace anywhere; keys and strings of printable ASCII
 *   without escapes (JSON.parse and JSON.stringify leave those as they are);
 * - values that are numbers in the form JSON.stringify writes (see number()), strings, true or false;
 * - ts a number or a string (parseTs reads it, as the rule does), absent or null; msgId a string or a number,
 *   or absent when ts is there (its id is derived from the values, as the rule does);
 * - values flat, in `values`, or both (the rule puts `values`' keys first: so does this).
 * Declined: a reading without ts nor msgId (its id depends on its place and the request), a key repeated in
 * one object (JSON.parse keeps the last), keys starting with a digit (V8 orders integer-like ones first),
 * exponents, non-canonical numbers, escapes, non-ASCII text, and any byte out of place.
 */

export interface Extracted {
  ts: number
  msgId: string
  /** What parsePayload builds: the value of every key, in its order. */
  values: Record<string, Value>
  /**
   * JSON.stringify(values) as UTF-8 (ASCII here), read from the payload: a view of the extractor's buffer,
   * valid until its next call.
   */
  json: Uint8Array
}

/**
 * The readings of a payload the gateway judged all valid, or undefined when its form is not one of the plain
 * ones above (then parsePayload reads it). `deviceId` and `receivedAt` as parsePayload takes them.
 */
export function extractJudged(
  payload: Buffer,
  deviceId: string,
  receivedAt: number,
): Extracted[] | undefined {
  try {
    return scanner.run(payload, deviceId, receivedAt)
  } finally {
    // Nothing of the payload is kept past the call.
    scanner.release()
  }
}

const QUOTE = 0x22
const COMMA = 0x2c
const COLON = 0x3a
const MINUS = 0x2d
const DOT = 0x2e
const ZERO = 0x30
const NINE = 0x39
const BACKSLASH = 0x5c
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d

/** 10^0 to 10^22: every one exact in a double. */
const POW10 = Array.from({ length: 23 }, (_, i) => 10 ** i)

/** What a value token is. */
const NUMBER = 0
const STRING = 1
const TRUE = 2
const FALSE = 3
const NULL = 4

/** Slots of the key cache (a power of two): a key's string by the hash of its bytes. */
const KEY_CACHE_SIZE = 1024

/** A key's string and the FNV-1a hash of its bytes; `seen` marks the reading it last appeared in. */
interface KeyEntry {
  key: string
  hash: number
  seen: number
}

const EMPTY = Buffer.alloc(0)

class Scanner {
  private p: Buffer = EMPTY
  private i = 0
  /** The bounds of the member name name() read last, quotes included. */
  private nameStart = 0
  private nameEnd = 0
  /** The current reading's value members: key, and the value's token (kind, bytes, number). */
  private count = 0
  private keys: KeyEntry[] = []
  private kinds = new Uint8Array(256)
  private keyStarts = new Int32Array(256)
  private starts = new Int32Array(256)
  private ends = new Int32Array(256)
  private nums = new Float64Array(256)
  /** 1 for a member of `values`, 0 for a flat one: the rule lists those of `values` first. */
  private levels = new Uint8Array(256)
  /** The last token read by value(). */
  private kind = NUMBER
  private num = 0
  private start = 0
  private readonly cache: Array<KeyEntry | undefined> = new Array(KEY_CACHE_SIZE).fill(undefined)
  private mark = 0
  /** The readings' JSON, one after the other; `outAt` is where the next goes. */
  private out = Buffer.allocUnsafeSlow(1024)
  private outAt = 0

  run(p: Buffer, deviceId: string, receivedAt: number): Extracted[] | undefined {
    this.p = p
    this.i = 0
    this.outAt = 0
    // Each reading's JSON is at most as long as its object in the payload.
    if (this.out.length < p.length) this.out = Buffer.allocUnsafeSlow(p.length * 2)
    const list: Extracted[] = []
    const c = this.ws()
    if (c === OPEN_BRACE) {
      const r = this.reading(deviceId, receivedAt)
      if (r === undefined) return undefined
      list.push(r)
    } else if (c === OPEN_BRACKET) {
      this.i++
      if (this.ws() === CLOSE_BRACKET) return undefined
      for (;;) {
        if (this.ws() !== OPEN_BRACE) return undefined
        const r = this.reading(deviceId, receivedAt)
        if (r === undefined) return undefined
        list.push(r)
        const d = this.ws()
        this.i++
        if (d === CLOSE_BRACKET) break
        if (d !== COMMA) return undefined
      }
    } else return undefined
    if (this.ws() !== -1) return undefined
    return list
  }

  release(): void {
    this.p = EMPTY
  }

  /** The byte at the next non-whitespace position (i moves there), or -1 at the end. */
  private ws(): number {
    const p = this.p
    let i = this.i
    while (i < p.length) {
      const c = p[i]
      // JSON's whitespace: space, tab, line feed, carriage return.
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) {
        this.i = i
        return c
      }
      i++
    }
    this.i = i
    return -1
  }

  /** One reading, the object at i. */
  private reading(deviceId: string, receivedAt: number): Extracted | undefined {
    this.count = 0
    // A fresh mark: a key already marked with it is repeated in this reading.
    this.mark++
    let ts = receivedAt
    let hasTs = false
    let msgId: string | undefined
    /** ts, msgId and values each once: bit 1, 2, 4. */
    let own = 0
    this.i++
    if (this.ws() === CLOSE_BRACE) return undefined
    for (;;) {
      const h = this.name()
      if (h === undefined) return undefined
      const ks = this.nameStart
      const ke = this.nameEnd
      const field = ownField(this.p, ks + 1, ke - 1)
      if (field === 0) {
        if (!this.member(ks, ke, h, 0)) return undefined
      } else {
        if (own & field) return undefined
        own |= field
        if (field === VALUES) {
          if (this.p[this.i] !== OPEN_BRACE || !this.values()) return undefined
        } else {
          if (!this.value()) return undefined
          if (field === TS) {
            if (this.kind === NUMBER || this.kind === STRING) {
              const t = parseTs(this.kind === NUMBER ? this.num : this.text())
              if (typeof t !== 'number') return undefined
              ts = t
              hasTs = true
            } else if (this.kind !== NULL) return undefined
          } else if (this.kind === STRING || this.kind === NUMBER) {
            // A canonical number's text is String(number), which is what the rule makes of it.
            msgId = this.kind === STRING ? this.text() : this.p.toString('latin1', this.start, this.i)
          } else if (this.kind !== NULL) return undefined
        }
      }
      const d = this.ws()
      this.i++
      if (d === CLOSE_BRACE) break
      if (d !== COMMA) return undefined
    }
    if (this.count === 0) return undefined
    if (msgId === undefined && !hasTs) return undefined
    const values = this.build()
    return { ts, msgId: msgId ?? deriveMsgId(deviceId, ts, values), values, json: this.json() }
  }

  /** The `values` object at i: its members, which the rule lists first. */
  private values(): boolean {
    this.i++
    if (this.ws() === CLOSE_BRACE) {
      this.i++
      return true
    }
    for (;;) {
      const h = this.name()
      if (h === undefined) return false
      const ks = this.nameStart
      const ke = this.nameEnd
      // ts, msgId and values inside values are refused by the rule: nothing to reproduce.
      if (ownField(this.p, ks + 1, ke - 1) !== 0) return false
      if (!this.member(ks, ke, h, 1)) return false
      const d = this.ws()
      this.i++
      if (d === CLOSE_BRACE) break
      if (d !== COMMA) return false
    }
    return true
  }

  /**
   * A member's `"name":` and the blanks after it: the name's hash, with its bounds (quotes included) left in
   * nameStart and nameEnd; undefined if the bytes are not that.
   */
  private name(): number | undefined {
    if (this.ws() !== QUOTE) return undefined
    const ks = this.i
    const h = this.string(true)
    if (h === undefined) return undefined
    this.nameStart = ks
    this.nameEnd = this.i
    if (this.ws() !== COLON) return undefined
    this.i++
    this.ws()
    return h
  }

  /** A value member whose key is the string at [ks, ke) (quotes included), hash h; its value is at i. */
  private member(ks: number, ke: number, h: number, level: number): boolean {
    const n = this.count
    // The rule allows 256 values per reading.
    if (n === 256) return false
    const entry = this.key(ks + 1, ke - 1, h)
    if (entry === undefined || entry.seen === this.mark) return false
    entry.seen = this.mark
    if (!this.value() || this.kind === NULL) return false
    this.keys[n] = entry
    this.keyStarts[n] = ks
    this.kinds[n] = this.kind
    this.starts[n] = this.start
    this.ends[n] = this.i
    this.nums[n] = this.num
    this.levels[n] = level
    this.count = n + 1
    return true
  }

  /** The cached string of the key at [s, e) with hash h; undefined for one this path does not take. */
  private key(s: number, e: number, h: number): KeyEntry | undefined {
    const p = this.p
    const len = e - s
    const slot = h & (KEY_CACHE_SIZE - 1)
    const cached = this.cache[slot]
    if (cached !== undefined && cached.hash === h) {
      const k = cached.key
      if (k.length !== len) return undefined
      for (let j = 0; j < len; j++) if (k.charCodeAt(j) !== p[s + j]) return undefined
      return cached
    }
    // Two keys of one reading in one slot: the second would take the mark of the first.
    if (cached !== undefined && cached.seen === this.mark) return undefined
    // Checked once per key entering the cache: keys the rule refuses (never in a judged payload) are not built
    // into an object here either, and keys starting with a digit (the integer-like ones among them, which V8
    // orders first) are left to JSON.parse.
    const c = p[s]
    if (len === 0 || (c >= ZERO && c <= NINE)) return undefined
    const key = p.toString('latin1', s, e)
    if (key === '__proto__' || key === 'constructor' || key === 'prototype') return undefined
    const entry: KeyEntry = { key, hash: h, seen: 0 }
    this.cache[slot] = entry
    return entry
  }

  /**
   * The string token at i (i moves past it): printable ASCII without escapes only. Returns the FNV-1a hash of
   * its content when `hash`, else 0; undefined if it is not a plain string.
   */
  private string(hash: boolean): number | undefined {
    const p = this.p
    let i = this.i + 1
    let h = 0x811c9dc5
    for (;;) {
      if (i >= p.length) return undefined
      const c = p[i]
      if (c === QUOTE) break
      if (c < 0x20 || c > 0x7e || c === BACKSLASH) return undefined
      if (hash) h = Math.imul(h ^ c, 0x01000193)
      i++
    }
    this.start = this.i
    this.i = i + 1
    return h
  }

  /** The content of the string token just read. */
  private text(): string {
    return this.p.toString('latin1', this.start + 1, this.i - 1)
  }

  /** The value token at i: sets kind, start, num; false if it is not one this path takes. */
  private value(): boolean {
    const p = this.p
    const c = p[this.i]
    if (c === QUOTE) {
      this.kind = STRING
      return this.string(false) !== undefined
    }
    if (c === MINUS || (c >= ZERO && c <= NINE)) {
      this.kind = NUMBER
      return this.number()
    }
    this.start = this.i
    if (bytesAre(p, this.i, 'true')) {
      this.kind = TRUE
      this.i += 4
    } else if (bytesAre(p, this.i, 'false')) {
      this.kind = FALSE
      this.i += 5
    } else if (bytesAre(p, this.i, 'null')) {
      this.kind = NULL
      this.i += 4
    } else return false
    return true
  }

  /**
   * A number token, taken only in the form JSON.stringify writes, so that its text is the one the rule would
   * store: no exponent, no leading zero, no trailing zero in a fraction, not -0, at most 15 significant digits,
   * and a decimal exponent where JavaScript writes fixed notation (1e-6 <= |x| < 1e21). Why that is enough:
   * two different decimals of at most 15 significant digits never round to the same double (a double holds
   * 15 decimal digits: DBL_DIG), so the shortest decimal that reads back as this double, which is what
   * Number.prototype.toString writes (ECMA-262 Number::toString), is this one. Its value is computed exactly:
   * the digits as an integer below 10^15 times or divided by an exact power of ten is one correctly rounded
   * operation, as JSON.parse's result is.
   */
  private number(): boolean {
    const p = this.p
    let i = this.i
    this.start = i
    const neg = p[i] === MINUS
    if (neg) i++
    /** The significant digits so far, as an integer, and how many. */
    let s = 0
    let k = 0
    /** Zeros read after the last nonzero digit, not yet in s. */
    let zeros = 0
    /** Digits before the point (0 when it is a lone 0). */
    let intLen = 0
    let c = p[i]
    if (c === ZERO) {
      i++
      c = p[i]
      if (c >= ZERO && c <= NINE) return false
    } else if (c > ZERO && c <= NINE) {
      while (c >= ZERO && c <= NINE) {
        if (c === ZERO) zeros++
        else {
          k += zeros + 1
          if (k > 15) return false
          s = s * POW10[zeros + 1] + (c - ZERO)
          zeros = 0
        }
        intLen++
        c = p[++i]
      }
      if (intLen > 21) return false
    } else return false
    /** The decimal exponent n of ECMA-262 Number::toString: the value is 0.d1d2... x 10^n. */
    let n = intLen
    if (c === DOT) {
      c = p[++i]
      if (!(c >= ZERO && c <= NINE)) return false
      // The int part's trailing zeros are significant once a fraction follows.
      if (zeros > 0) {
        k += zeros
        if (k > 15) return false
        s *= POW10[zeros]
        zeros = 0
      }
      while (c >= ZERO && c <= NINE) {
        if (c === ZERO) {
          if (k === 0) n--
          else zeros++
        } else {
          k += zeros + 1
          if (k > 15) return false
          s = s * POW10[zeros + 1] + (c - ZERO)
          zeros = 0
        }
        c = p[++i]
      }
      // A trailing zero (1.50) is not how the number is written back; 0.0 neither.
      if (zeros > 0 || k === 0) return false
      if (n <= -6) return false
    }
    if (c === 0x65 || c === 0x45) return false
    if (k === 0) {
      // A lone 0 (its digit is no significant one); -0 is written back as 0.
      if (neg) return false
      this.num = 0
    } else {
      const e = n - k
      const v = e >= 0 ? s * POW10[e] : s / POW10[-e]
      this.num = neg ? -v : v
    }
    this.i = i
    return true
  }

  /** The values object, as parsePayload builds it. */
  private build(): Record<string, Value> {
    const values: Record<string, Value> = {}
    const n = this.count
    for (let pass = 1; pass >= 0; pass--)
      for (let j = 0; j < n; j++) {
        if (this.levels[j] !== pass) continue
        const kind = this.kinds[j]
        values[this.keys[j].key] =
          kind === NUMBER
            ? this.nums[j]
            : kind === STRING
              ? this.p.toString('latin1', this.starts[j] + 1, this.ends[j] - 1)
              : kind === TRUE
      }
    return values
  }

  /**
   * JSON.stringify(values): each member's bytes as they are in the payload, without whitespace; members that
   * follow each other without any (the usual payload) copied as one run.
   */
  private json(): Uint8Array {
    const p = this.p
    const o = this.out
    const start = this.outAt
    let at = start
    o[at++] = OPEN_BRACE
    /** The run of compact members not yet copied, [runStart, runEnd) of the payload. */
    let runStart = -1
    let runEnd = -1
    const n = this.count
    for (let pass = 1; pass >= 0; pass--)
      for (let j = 0; j < n; j++) {
        if (this.levels[j] !== pass) continue
        const ks = this.keyStarts[j]
        const vs = this.starts[j]
        const ve = this.ends[j]
        // Compact: `"key":value`, the colon right after the key's closing quote and the value right after it.
        if (p[vs - 1] === COLON && p[vs - 2] === QUOTE && vs - 2 > ks) {
          if (runEnd === ks - 1 && p[runEnd] === COMMA) {
            runEnd = ve
            continue
          }
          if (runStart >= 0) at = copyRun(p, runStart, runEnd, o, at, start)
          runStart = ks
          runEnd = ve
          continue
        }
        if (runStart >= 0) at = copyRun(p, runStart, runEnd, o, at, start)
        runStart = -1
        runEnd = -1
        if (at > start + 1) o[at++] = COMMA
        const key = this.keys[j].key
        o[at++] = QUOTE
        at += o.write(key, at, 'latin1')
        o[at++] = QUOTE
        o[at++] = COLON
        at += p.copy(o, at, vs, ve)
      }
    if (runStart >= 0) at = copyRun(p, runStart, runEnd, o, at, start)
    o[at++] = CLOSE_BRACE
    this.outAt = at
    // A plain view: cheaper to make than a Buffer's subarray.
    return new Uint8Array(o.buffer, o.byteOffset + start, at - start)
  }
}

/** Copies the members in p[s, e) to o at `at`, after a comma unless they are the first (after `start`'s brace). */
function copyRun(p: Buffer, s: number, e: number, o: Buffer, at: number, start: number): number {
  if (at > start + 1) o[at++] = COMMA
  return at + p.copy(o, at, s, e)
}

const TS = 1
const MSG_ID = 2
const VALUES = 4

/** Which of the reading's own fields the key at [s, e) names (0: none). */
function ownField(p: Buffer, s: number, e: number): number {
  const len = e - s
  if (len === 2) return bytesAre(p, s, 'ts') ? TS : 0
  if (len === 5) return bytesAre(p, s, 'msgId') ? MSG_ID : 0
  if (len === 6) return bytesAre(p, s, 'values') ? VALUES : 0
  return 0
}

/** Whether the bytes at i are the ASCII `word`. */
function bytesAre(p: Buffer, i: number, word: string): boolean {
  if (i + word.length > p.length) return false
  for (let j = 0; j < word.length; j++) if (p[i + j] !== word.charCodeAt(j)) return false
  return true
}

const scanner = new Scanner()
