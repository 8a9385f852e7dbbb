/**
 * Reading payloads for tests: deep nesting (`nest`), and generated payloads for property tests, from a small
 * seeded generator (a mulberry32 PRNG) rather than a property-testing package, because the payloads are JSON
 * text built by hand (a key like `__proto__` cannot be put in a JS object literal and serialized) and a fixed
 * seed makes any failure reproducible as it is.
 */
import { prng } from '../../src/lib/prng.js'
import { LIMITS } from '../../src/readings/index.js'
import { TS_MAX } from '../../src/readings/time.js'

export { prng }

/** `depth` levels of arrays around `inner`: nest(2, '1') is [[1]]. */
export const nest = (depth: number, inner = ''): string => '['.repeat(depth) + inner + ']'.repeat(depth)

/** Generates JSON payload texts that mix good readings with every way a reading can go wrong. */
export class Payloads {
  private readonly r: () => number
  /** While a reading is generated clean, only good keys, values, ts and msgIds are drawn. */
  private clean = false
  /** `spaced`: whitespace around every `:` and `,` between members, as many JSON writers put it. */
  constructor(
    seed: number,
    private readonly spaced = false,
  ) {
    this.r = prng(seed)
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]
  }
  private chance(p: number): boolean {
    return this.r() < p
  }

  private key(): string {
    if (this.clean || this.chance(0.8))
      return this.pick(['a', 'b', 'c', 'lat', 'lon', 'speed', 'rpm', 'note', 'ok', '😀'])
    return this.pick([
      'ts',
      'msgId',
      'values',
      '__proto__',
      'constructor',
      'prototype',
      'toString',
      '',
      'k'.repeat(LIMITS.maxKeyLength),
      'k'.repeat(LIMITS.maxKeyLength + 1),
      'a\u0000',
      'x\ud800',
      '\udc00y',
      '\ud83d\ude00',
      'tab\there',
    ])
  }

  private string(): string {
    return this.pick([
      'text',
      '',
      'é😀',
      'a\u0000b',
      '\ud800',
      'z\udfff',
      '\ud83d\ude00',
      '\\u0000',
      's'.repeat(LIMITS.maxStringLength),
      's'.repeat(LIMITS.maxStringLength + 1),
    ])
  }

  /** A value's JSON text: mostly good, sometimes of a type or range the rule refuses. */
  private value(): string {
    const n = this.clean ? this.r() * 0.7 : this.r()
    if (n < 0.35)
      return String(Math.round((this.r() * (this.clean ? 180 : 400) - (this.clean ? 90 : 200)) * 100) / 100)
    if (n < 0.45) return this.pick(['true', 'false'])
    if (n < 0.7) return JSON.stringify(this.clean ? this.pick(['text', 'é😀', '', '\\u0000']) : this.string())
    if (n < 0.75) return this.pick(['1e999', '-1e999', '0', '-0', '1e-320'])
    return this.pick(['null', '[]', '[1]', '{}', '{"x":1}', '[[[[1]]]]', '"90"'])
  }

  private ts(): string | undefined {
    if (this.chance(0.3)) return undefined
    if (this.clean) return this.pick(['1732330000123', 'null', '"2026-11-23T10:00:00.250+02:00"'])
    return this.pick([
      '1732330000123',
      '1732330000123.9',
      '0',
      '-1',
      String(TS_MAX),
      String(TS_MAX + 1),
      '1e999',
      'null',
      '"2026-11-23T08:00:00Z"',
      '"2026-11-23T10:00:00.250+02:00"',
      '"2026-11-23T08:00:00"',
      '"1"',
      '"Nov 23 2026"',
      '"2026-02-29T00:00:00Z"',
      'true',
      '{}',
    ])
  }

  private msgId(): string | undefined {
    if (this.chance(0.4)) return undefined
    if (this.clean) return `"m${Math.floor(this.r() * 20)}"`
    return this.pick([
      `"m${Math.floor(this.r() * 20)}"`,
      String(Math.floor(this.r() * 20)),
      '""',
      JSON.stringify('i'.repeat(LIMITS.maxMsgIdLength + 1)),
      '"m\\u0000"',
      '"\\ud800"',
      '"\\ud83d\\ude00"',
      '1.5',
      '1e999',
      'null',
      '{}',
      'true',
    ])
  }

  private colon(): string {
    return this.spaced ? ' : ' : ':'
  }
  private comma(): string {
    return this.spaced ? ',\n  ' : ','
  }

  private entries(n: number): string[] {
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(`${JSON.stringify(this.key())}${this.colon()}${this.value()}`)
    return out
  }

  /** One reading's JSON text (or, now and then, something that is not an object). */
  reading(): string {
    this.clean = this.chance(0.5)
    if (!this.clean && this.chance(0.08)) return this.pick(['1', '"x"', 'null', '[]', '[{"a":1}]', 'true'])
    const parts: string[] = []
    const ts = this.ts()
    if (ts !== undefined) parts.push(`"ts"${this.colon()}${ts}`)
    const id = this.msgId()
    if (id !== undefined) parts.push(`"msgId"${this.colon()}${id}`)
    parts.push(...this.entries(Math.floor(this.r() * 4)))
    if (this.chance(0.4)) {
      const inner =
        !this.clean && this.chance(0.1)
          ? this.pick(['null', '[]', '1', '"v"'])
          : `{${this.entries(Math.floor(this.r() * 4)).join(this.comma())}}`
      parts.push(`"values"${this.colon()}${inner}`)
    }
    // Shuffled: the rule must not depend on the order of a reading's fields.
    for (let i = parts.length - 1; i > 0; i--) {
      const j = Math.floor(this.r() * (i + 1))
      ;[parts[i], parts[j]] = [parts[j], parts[i]]
    }
    return `{${parts.join(this.comma())}}`
  }

  payload(): string {
    const n = this.r()
    if (n < 0.03) return this.pick(['', '{', '[{"a":1}', '{"a":1}}', '\u0001', 'nul'])
    if (n < 0.05) return `${'['.repeat(LIMITS.maxDepth + 1)}${']'.repeat(LIMITS.maxDepth + 1)}`
    if (n < 0.5) return this.reading()
    const len = Math.floor(this.r() * 6)
    return `[${Array.from({ length: len }, () => this.reading()).join(this.comma())}]`
  }
}
