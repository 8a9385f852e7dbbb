/**
 * Fuzz inputs for the device-protocol parsers: random bytes and mutations of valid inputs, from a seeded PRNG
 * (payloads.ts's), so a failure names its seed and input number and replays as it is. Budgets are counts of
 * inputs, never time, so a run does the same work on a fast machine and a slow CI runner.
 */
import { prng } from './payloads.js'

export { prng }

/** Bytes that matter to the parsers here: JSON's structure, query syntax, line ends, escapes, odd numbers. */
const TOKENS = [
  '{',
  '}',
  '[',
  ']',
  '"',
  '\\',
  ':',
  ',',
  '\n',
  '\r\n',
  '\r',
  ' ',
  '&',
  '=',
  '%',
  '%00',
  '%zz',
  '%E2%82',
  '+',
  '?',
  '-1',
  '0',
  '1e999',
  '-1e-999',
  'NaN',
  'Infinity',
  'null',
  'true',
  'false',
  '__proto__',
  'constructor',
  '\\u0000',
  '\\ud800',
  '\u0000',
  '\u00ff',
  '😀',
  '"ts"',
  '"msgId"',
  '"values"',
  'id=',
  'lat=',
  'timestamp=',
  '9'.repeat(30),
  '{'.repeat(40),
  '['.repeat(40),
]

export class Fuzz {
  readonly r: () => number

  constructor(readonly seed: number) {
    this.r = prng(seed)
  }

  int(n: number): number {
    return Math.floor(this.r() * n)
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]
  }

  /** `n` random bytes, of all 256 values or, half the time, of the printable and structural ones. */
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    const printable = this.r() < 0.5
    for (let i = 0; i < n; i++) b[i] = printable ? 0x20 + this.int(0x5f) : this.int(256)
    return b
  }

  /** Random input up to `max` bytes: raw bytes, or a soup of tokens. */
  random(max: number): Buffer {
    if (this.r() < 0.5) return this.bytes(this.int(max + 1))
    const parts: string[] = []
    let len = 0
    while (len < max && this.r() < 0.9) {
      const t = this.r() < 0.7 ? this.pick(TOKENS) : this.bytes(1 + this.int(8)).toString('latin1')
      parts.push(t)
      len += t.length
    }
    return Buffer.from(parts.join(''))
  }

  /** `valid` with 1 to 4 random edits: bytes flipped, inserted, deleted, a token put in, a slice repeated, cut. */
  mutate(valid: Buffer): Buffer {
    let b = valid
    const edits = 1 + this.int(4)
    for (let e = 0; e < edits; e++) {
      const at = this.int(b.length + 1)
      switch (this.int(6)) {
        case 0:
          if (b.length > 0) {
            b = Buffer.from(b)
            b[Math.min(at, b.length - 1)] ^= 1 << this.int(8)
          }
          break
        case 1:
          b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(3)), b.subarray(at)])
          break
        case 2:
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + this.int(4))])
          break
        case 3:
          b = Buffer.concat([b.subarray(0, at), Buffer.from(this.pick(TOKENS)), b.subarray(at)])
          break
        case 4: {
          const end = Math.min(b.length, at + 1 + this.int(16))
          b = Buffer.concat([b.subarray(0, end), b.subarray(at, end), b.subarray(end)])
          break
        }
        default:
          b = b.subarray(0, at)
      }
    }
    return b
  }

  /** Splits `b` into 1 to 6 chunks at random points, as TCP reads may. */
  chunks(b: Buffer): Buffer[] {
    const cuts = new Set<number>()
    const n = this.int(6)
    for (let i = 0; i < n; i++) cuts.add(this.int(b.length + 1))
    const at = [0, ...[...cuts].sort((x, y) => x - y), b.length]
    const out: Buffer[] = []
    for (let i = 1; i < at.length; i++) if (at[i] > at[i - 1]) out.push(b.subarray(at[i - 1], at[i]))
    return out
  }
}

/**
 * Runs `fn` for inputs 0..count-1. Stack traces are off meanwhile (Error.stackTraceLimit = 0): a parser that
 * refuses input often meets JSON.parse's SyntaxError, whose stack costs more than the rest of its work. On a
 * throw, the run is replayed from the seed with stacks on, and the error reported with the seed and the input
 * number.
 */
export function fuzz(count: number, seed: number, fn: (f: Fuzz, i: number) => void): number {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  const f = new Fuzz(seed)
  let i = 0
  try {
    for (; i < count; i++) fn(f, i)
  } catch {
    Error.stackTraceLimit = limit
    const again = new Fuzz(seed)
    try {
      for (let j = 0; j <= i; j++) fn(again, j)
    } catch (err) {
      throw new Error(`fuzz input ${i} (seed ${seed}): ${(err as Error).stack ?? err}`)
    }
    throw new Error(
      `fuzz input ${i} (seed ${seed}) threw, and not again on replay: the parser is not deterministic`,
    )
  } finally {
    Error.stackTraceLimit = limit
  }
  return i
}
