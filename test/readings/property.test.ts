/**
 * The reading rule against many generated payloads: a small seeded generator (a mulberry32 PRNG) rather than
 * a property-testing package, because the payloads are JSON text built by hand (a key like `__proto__` cannot
 * be put in a JS object literal and serialized) and a fixed seed makes any failure reproducible as it is.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { build } from '../../src/ingest/index.js'
import { unstorable } from '../../src/lib/text.js'
import type { Envelope } from '../../src/queue/types.js'
import { LIMITS, type Parsed, judgePayload, parsePayload } from '../../src/readings/index.js'
import { TS_MAX } from '../../src/readings/time.js'
import type { Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'

/** mulberry32: a tiny PRNG whose sequence depends only on its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Generates JSON payload texts that mix good readings with every way a reading can go wrong. */
class Payloads {
  private readonly r: () => number
  /** While a reading is generated clean, only good keys, values, ts and msgIds are drawn. */
  private clean = false
  constructor(seed: number) {
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

  private entries(n: number): string[] {
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(`${JSON.stringify(this.key())}:${this.value()}`)
    return out
  }

  /** One reading's JSON text (or, now and then, something that is not an object). */
  reading(): string {
    this.clean = this.chance(0.5)
    if (!this.clean && this.chance(0.08)) return this.pick(['1', '"x"', 'null', '[]', '[{"a":1}]', 'true'])
    const parts: string[] = []
    const ts = this.ts()
    if (ts !== undefined) parts.push(`"ts":${ts}`)
    const id = this.msgId()
    if (id !== undefined) parts.push(`"msgId":${id}`)
    parts.push(...this.entries(Math.floor(this.r() * 4)))
    if (this.chance(0.4)) {
      const inner =
        !this.clean && this.chance(0.1)
          ? this.pick(['null', '[]', '1', '"v"'])
          : `{${this.entries(Math.floor(this.r() * 4)).join(',')}}`
      parts.push(`"values":${inner}`)
    }
    // Shuffled: the rule must not depend on the order of a reading's fields.
    for (let i = parts.length - 1; i > 0; i--) {
      const j = Math.floor(this.r() * (i + 1))
      ;[parts[i], parts[j]] = [parts[j], parts[i]]
    }
    return `{${parts.join(',')}}`
  }

  payload(): string {
    const n = this.r()
    if (n < 0.03) return this.pick(['', '{', '[{"a":1}', '{"a":1}}', '\u0001', 'nul'])
    if (n < 0.05) return `${'['.repeat(LIMITS.maxDepth + 1)}${']'.repeat(LIMITS.maxDepth + 1)}`
    if (n < 0.5) return this.reading()
    const len = Math.floor(this.r() * 6)
    return `[${Array.from({ length: len }, () => this.reading()).join(',')}]`
  }
}

const SEED = 0x10c0de
const COUNT = 20_000
const RESERVED = new Set(['ts', 'msgId', 'values', '__proto__', 'constructor', 'prototype'])

/** What makes a built reading storable: every check the gateway could have made, made. */
function storable(p: Parsed): string | undefined {
  for (const r of p.readings) {
    if (!Number.isInteger(r.ts) || r.ts < 0 || r.ts > TS_MAX) return `ts ${r.ts}`
    if (r.msgId.length < 1 || r.msgId.length > LIMITS.maxMsgIdLength || unstorable(r.msgId))
      return `msgId ${JSON.stringify(r.msgId)}`
    const keys = Object.keys(r.values)
    if (keys.length < 1 || keys.length > LIMITS.maxValuesPerReading) return `${keys.length} values`
    if (Object.getPrototypeOf(r.values) !== Object.prototype) return 'values lost their prototype'
    for (const k of keys) {
      if (k.length < 1 || k.length > LIMITS.maxKeyLength || unstorable(k) || RESERVED.has(k))
        return `key ${JSON.stringify(k)}`
      const v = r.values[k]
      if (
        typeof v === 'number'
          ? !Number.isFinite(v)
          : typeof v === 'string'
            ? v.length > LIMITS.maxStringLength || unstorable(v) !== undefined
            : typeof v !== 'boolean'
      )
        return `value ${JSON.stringify(v)}`
    }
    const { lat, lon } = r.values
    if (lat !== undefined && !(typeof lat === 'number' && lat >= -90 && lat <= 90)) return `lat ${lat}`
    if (lon !== undefined && !(typeof lon === 'number' && lon >= -180 && lon <= 180)) return `lon ${lon}`
  }
  return undefined
}

describe('the reading rule on generated payloads', () => {
  test(`${COUNT} payloads (seed ${SEED}): judgePayload's verdict is parsePayload's, and what is built is storable`, () => {
    const gen = new Payloads(SEED)
    const seen = new Map<string, number>()
    for (let i = 0; i < COUNT; i++) {
      const text = gen.payload()
      const payload = i % 2 === 0 ? text : Buffer.from(text)
      const judged = judgePayload(payload)
      const parsed = parsePayload(payload, 'dev', 1_795_420_800_000)
      const at = `payload ${i}: ${text.slice(0, 300)}`
      assert.equal(judged.valid, parsed.readings.length, at)
      assert.deepEqual(judged.rejections, parsed.rejections, at)
      assert.equal(storable(parsed), undefined, at)
      for (const r of parsed.rejections) seen.set(r.reason, (seen.get(r.reason) ?? 0) + 1)
      seen.set('valid', (seen.get('valid') ?? 0) + parsed.readings.length)
    }
    // The generator reaches every reason a payload can have on its own (the others are a transport's).
    const reached = [...seen.keys()].sort()
    assert.deepEqual(reached, [
      'duplicate_key',
      'empty_payload',
      'invalid_msg_id',
      'invalid_ts',
      'invalid_value',
      'malformed_json',
      'no_values',
      'not_an_object',
      'reserved_key',
      'too_deep',
      'unstorable_text',
      'valid',
    ])
    assert.ok((seen.get('valid') ?? 0) > COUNT / 4, `valid readings: ${seen.get('valid')}`)
  })
})

describe('the reading rule on generated payloads, stored', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
    // The ingest stores readings only for devices that exist.
    for (let i = 0; i < 7; i++)
      await store.devices.create({ id: `dev-${i}`, name: 'gen', tokenHash: `h-${i}` })
  })
  after(() => store.stop())

  test('every reading the rule accepts is stored by PostgreSQL: nothing acked is refused later', async () => {
    const gen = new Payloads(SEED + 1)
    const items: Envelope[] = Array.from({ length: 4_000 }, (_, i) => ({
      id: `gen-${i}`,
      deviceId: `dev-${i % 7}`,
      transport: 'http',
      receivedAt: 1_795_420_800_000 + i,
      payload: Buffer.from(gen.payload()),
    }))
    const { batch, quarantine } = build(items)
    assert.ok(batch.count > 1_000, `readings built: ${batch.count}`)
    // One transaction: a single row PostgreSQL refused would fail all of it.
    const r = await store.writeBatch(batch, quarantine)
    assert.equal(r.stored + r.duplicate, batch.count)
    assert.equal(r.quarantined, quarantine.length, 'every quarantine row (its detail is text) was stored too')
    const { rows } = await store.pool.query('SELECT count(*)::int AS n FROM telemetry')
    assert.equal(rows[0].n, r.stored)
  })
})
