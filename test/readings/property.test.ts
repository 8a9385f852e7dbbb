/** The reading rule against many generated payloads (test/helpers/payloads.ts). */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { build } from '../../src/ingest/index.js'
import { unstorable } from '../../src/lib/text.js'
import type { Envelope } from '../../src/queue/types.js'
import { LIMITS, type Parsed, judgePayload, parsePayload } from '../../src/readings/index.js'
import { TS_MAX } from '../../src/readings/time.js'
import type { Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'
import { Payloads } from '../helpers/payloads.js'

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
