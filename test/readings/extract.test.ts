/**
 * The ingest's fast path (readings/extract.ts) against the rule: for every payload the gateway judged all
 * valid, it either declines or makes exactly what parsePayload and JSON.stringify make of the same bytes.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { build } from '../../src/ingest/index.js'
import type { Envelope } from '../../src/queue/types.js'
import { type Extracted, extractJudged } from '../../src/readings/extract.js'
import { judgePayload, parsePayload } from '../../src/readings/index.js'
import { Payloads, prng } from '../helpers/payloads.js'

const RECEIVED = 1_795_420_800_000

/** The fast path's readings for `text`, checked against the rule's; undefined when it declined. */
function same(text: string): number | undefined {
  const payload = Buffer.from(text)
  const got = extractJudged(payload, 'dev', RECEIVED)
  if (got === undefined) return undefined
  const rule = parsePayload(payload, 'dev', RECEIVED)
  assert.deepEqual(rule.rejections, [], `extracted a payload the rule refuses: ${text}`)
  assert.equal(got.length, rule.readings.length, text)
  for (let i = 0; i < got.length; i++) {
    const f: Extracted = got[i]
    const r = rule.readings[i]
    assert.equal(f.ts, r.ts, text)
    assert.equal(f.msgId, r.msgId, text)
    // Key order too: it is the order the rule stores and merges them in.
    assert.deepEqual(Object.entries(f.values), Object.entries(r.values), text)
    assert.equal(text8(f.json), JSON.stringify(r.values), text)
  }
  return got.length
}

const fast = (text: string) => extractJudged(Buffer.from(text), 'dev', RECEIVED)
const text8 = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8')

describe('readings: the fast path for judged payloads', () => {
  for (const spaced of [false, true]) {
    test(`generated payloads${spaced ? ' with whitespace' : ''}: what the fast path takes, it reads as the rule does`, () => {
      const gen = new Payloads(0x5eed, spaced)
      let judged = 0
      let taken = 0
      for (let i = 0; i < 20_000; i++) {
        const text = gen.payload()
        const j = judgePayload(text)
        if (j.rejections.length > 0) continue
        judged++
        if (same(text) !== undefined) taken++
      }
      // Most valid generated readings are in the plain form (the rest have non-ASCII text or no ts nor msgId).
      assert.ok(judged > 3_000, `judged valid: ${judged}`)
      assert.ok(taken > judged / 4, `taken by the fast path: ${taken} of ${judged}`)
    })
  }

  test('the fleet reading and its usual variants are taken, flat, nested, spaced and in arrays', () => {
    const fleet =
      '{"ts":1767225600000,"msgId":"truck-0-000001","lat":37.912345,"lon":23.70001,"speed":77.4,"rpm":2400,"fuel":55.5,"coolant":90.1,"odometer":100000.3}'
    for (const text of [
      fleet,
      `[${fleet},${fleet.replace('000001', '000002')}]`,
      '{"msgId":"m","values":{"a":1,"b":"x"},"c":true}',
      '{"a":1,"values":{"b":2},"msgId":"m"}',
      '{ "ts" : "2026-11-23T10:00:00.250+02:00" ,\n\t"msgId" : 7 , "ok" : false }',
      '{"ts":1732330000123.9,"v":-0.5}',
      '{"ts":null,"msgId":"n","v":0}',
      '{"ts":1732330000123,"v":1}',
      '{"ts":1732330000123,"msgId":null,"v":1}',
    ])
      assert.ok(same(text), `not taken: ${text}`)
    // values' own keys first, as the rule lists them.
    assert.equal(text8(fast('{"a":1,"values":{"b":2},"msgId":"m"}')![0].json), '{"b":2,"a":1}')
    // An id derived from device, ts and values, as the rule derives it.
    assert.match(fast('{"ts":1732330000123,"v":1}')?.[0].msgId ?? '', /^h:/)
  })

  test('forms it cannot reproduce byte for byte are declined, for parsePayload to read', () => {
    for (const text of [
      '{"v":1}', // neither ts nor msgId: the id depends on the request
      '{"msgId":"m","v":1,"v":2}', // JSON.parse keeps the last
      '{"msgId":"m","ts":1,"ts":2,"v":1}',
      '{"msgId":"m","v":"caf\u00e9"}', // non-ASCII
      '{"msgId":"m","v":"a\\"b"}', // an escape
      '{"msgId":"m\\u0041","v":1}',
      '{"msgId":"m","1":1}', // V8 lists integer-like keys first
      '{"msgId":"m","v":1.50}', // written back as 1.5
      '{"msgId":"m","v":1e3}',
      '{"msgId":"m","v":-0}',
      '{"msgId":"m","v":0.0000001}', // written back as 1e-7
      '{"msgId":"m","v":12345678901234567}', // more digits than a double holds
      '{"msgId":"m","v":null}',
      '{"msgId":"m","v":[1]}',
      '{"msgId":"m","values":null,"v":1}',
      '{"msgId":"m","__proto__":1}',
      '{"msgId":"m"}',
      '[]',
      '[{"msgId":"m","v":1},{"v":2}]',
      '{"msgId":"m","v":1} x',
      '\ufeff{"msgId":"m","v":1}',
      '{"msgId":"m","v":tru}',
      '{"msgId":"m","v":1',
    ])
      assert.equal(fast(text), undefined, text)
  })

  test('numbers: taken only in the text JSON.stringify writes for them, with the value JSON.parse reads', () => {
    const r = prng(7)
    let taken = 0
    const digits = (n: number) => Array.from({ length: n }, () => Math.floor(r() * 10)).join('')
    for (let i = 0; i < 50_000; i++) {
      // Doubles as written back, of every magnitude; and decimal texts as devices write them.
      const x = (r() - 0.5) * 10 ** Math.floor(r() * 50 - 25)
      const texts = [
        JSON.stringify(x),
        JSON.stringify(Math.round(x * 1e4) / 1e4),
        `${r() < 0.2 ? '-' : ''}${digits(1 + Math.floor(r() * 18)).replace(/^0+(?=\d)/, '')}${r() < 0.6 ? `.${digits(1 + Math.floor(r() * 10))}` : ''}`,
      ]
      for (const t of texts) {
        const got = fast(`{"msgId":"m","v":${t}}`)
        if (got === undefined) continue
        taken++
        assert.equal(t, JSON.stringify(JSON.parse(t)), `${t} taken, but it is written back otherwise`)
        assert.ok(Object.is(got[0].values.v, JSON.parse(t)), `${t}: read as ${got[0].values.v}`)
        assert.equal(text8(got[0].json), `{"v":${t}}`)
      }
    }
    assert.ok(taken > 60_000, `numbers taken: ${taken}`)
  })

  test('build() makes the same COPY rows and latest values from a judged payload as from parsePayload', () => {
    const gen = new Payloads(0xc0b1)
    const items: Envelope[] = []
    for (let i = 0; i < 10_000; i++) {
      const text = gen.payload()
      if (judgePayload(text).rejections.length > 0) continue
      items.push({
        id: `e${i}`,
        deviceId: `dev-${i % 5}`,
        transport: 'mqtt',
        receivedAt: RECEIVED + (i % 17),
        payload: Buffer.from(text),
      })
    }
    const slow = build(items)
    const quick = build(items.map((e) => ({ ...e, allValid: true })))
    assert.ok(slow.batch.count > 1_500, `readings: ${slow.batch.count}`)
    assert.equal(quick.batch.count, slow.batch.count)
    assert.deepEqual(quick.quarantine, slow.quarantine)
    assert.ok(quick.batch.copyData().equals(slow.batch.copyData()), 'the COPY data differs')
    assert.deepEqual(quick.batch.latestRows(), slow.batch.latestRows())
  })
})
