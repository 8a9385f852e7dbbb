import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { LIMITS, deriveMsgId, judgePayload, parsePayload } from '../../src/readings/index.js'

const NOW = 1_800_000_000_000

describe('reading format', () => {
  test('flat and nested forms normalise to the same reading', () => {
    const flat = parsePayload(
      '{"ts":1732330000123,"msgId":"42","lat":37.98,"lon":23.72,"speed":52.3}',
      'd',
      NOW,
    )
    const nested = parsePayload(
      '{"ts":"2024-11-23T02:46:40.123Z","msgId":"42","values":{"lat":37.98,"lon":23.72,"speed":52.3}}',
      'd',
      NOW,
    )
    assert.deepEqual(flat, nested)
    assert.deepEqual(flat.readings[0], {
      ts: 1732330000123,
      msgId: '42',
      values: { lat: 37.98, lon: 23.72, speed: 52.3 },
    })
  })

  test('without ts the receive time is used; without msgId one is derived from device, ts and content', () => {
    const a = parsePayload('{"b":2,"a":1}', 'dev1', NOW).readings[0]
    const b = parsePayload('{"a":1,"b":2}', 'dev1', NOW).readings[0]
    assert.equal(a.ts, NOW)
    assert.equal(a.msgId, b.msgId, 'key order does not matter')
    assert.notEqual(a.msgId, parsePayload('{"a":1,"b":2}', 'dev2', NOW).readings[0].msgId)
    assert.notEqual(a.msgId, parsePayload('{"a":1,"b":3}', 'dev1', NOW).readings[0].msgId)
    assert.equal(a.msgId, deriveMsgId('dev1', NOW, { a: 1, b: 2 }))
  })

  test('numeric msgIds become strings', () => {
    assert.equal(parsePayload('{"msgId":7,"v":1}', 'd', NOW).readings[0].msgId, '7')
  })

  for (const [payload, reason] of [
    ['{', 'malformed_json'],
    ['', 'malformed_json'],
    ['"text"', 'not_an_object'],
    ['[1]', 'not_an_object'],
    ['[]', 'empty_payload'],
    ['{"ts":-5,"v":1}', 'invalid_timestamp'],
    ['{"ts":true,"v":1}', 'invalid_timestamp'],
    ['{"ts":"2024-13-45","v":1}', 'invalid_timestamp'],
    ['{"msgId":{},"v":1}', 'invalid_msg_id'],
    ['{"msgId":"","v":1}', 'invalid_msg_id'],
    ['{"v":[1]}', 'invalid_value'],
    ['{"v":null}', 'invalid_value'],
    ['{"v":1e999}', 'invalid_value'],
    ['{"v":"a\\u0000b"}', 'invalid_value'],
    ['{"values":[1]}', 'invalid_value'],
    ['{"lat":91,"lon":0}', 'invalid_value'],
    ['{"lon":"east"}', 'invalid_value'],
    ['{"ts":1}', 'no_values'],
    ['{"__proto__":5,"v":1}', 'invalid_value'],
    ['{"values":{"__proto__":5}}', 'invalid_value'],
  ] as const) {
    test(`${JSON.stringify(payload)} is rejected as ${reason}`, () => {
      const r = parsePayload(payload, 'd', NOW)
      assert.equal(r.readings.length, 0)
      assert.equal(r.rejections.length, 1)
      assert.equal(r.rejections[0].reason, reason)
      assert.ok(r.rejections[0].detail.length > 0)
    })
  }

  test('an array keeps the good readings and names the index of each bad one', () => {
    const r = parsePayload('[{"v":1},{"v":{}},{"v":3}]', 'd', NOW)
    assert.equal(r.readings.length, 2)
    assert.deepEqual(
      r.rejections.map((x) => [x.index, x.reason, x.element]),
      [[1, 'invalid_value', '{"v":{}}']],
    )
  })

  test('binary garbage is rejected, not thrown', () => {
    const r = parsePayload(Buffer.from([0xff, 0xfe, 0x00, 0x7b]), 'd', NOW)
    assert.equal(r.rejections[0].reason, 'malformed_json')
  })
})

/** `depth` levels of arrays around `inner`: nest(2, '1') is [[1]]. */
const nest = (depth: number, inner = '') => '['.repeat(depth) + inner + ']'.repeat(depth)
const nestObject = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)

describe('deep and huge payloads', () => {
  const tooDeep = (payload: string) => {
    for (const r of [judgePayload(payload), parsePayload(payload, 'd', NOW)]) {
      assert.equal(r.readings.length, 0)
      assert.equal(r.valid, 0)
      assert.deepEqual(
        r.rejections.map((x) => [x.reason, x.index, x.element]),
        [['too_deep', undefined, undefined]],
        'refused whole, with no element re-serialized',
      )
      assert.match(r.rejections[0].detail, new RegExp(`deeper than ${LIMITS.maxDepth} levels`))
    }
  }

  test('100,000 nested arrays are refused whole as too_deep, not thrown', () => {
    tooDeep(nest(100_000))
  })

  test('100,000 nested objects are refused whole as too_deep, not thrown', () => {
    tooDeep(nestObject(100_000))
  })

  test('a deep value inside values refuses the whole payload, good readings beside it included', () => {
    tooDeep(`[{"v":1},{"values":{"x":${nest(100_000)}}},{"v":3}]`)
    tooDeep(`{"values":{"x":${nest(100_000)}}}`)
  })

  test('a deep value is refused as too_deep whichever check fails first in its reading', () => {
    tooDeep(`[{"ts":"not a time","x":${nest(100_000)}}]`)
    tooDeep(`[{"msgId":${nest(100_000)},"v":1}]`)
    tooDeep(`{"ts":${nestObject(100_000)},"v":1}`)
  })

  test('up to the depth limit a nested value is one bad reading; one level more refuses the payload', () => {
    // An array, a reading, a key, then arrays: the payload is 2 + inner levels deep.
    const at = (levels: number) => `[{"v":1},{"x":${nest(levels - 2, '1')}}]`
    const ok = parsePayload(at(LIMITS.maxDepth), 'd', NOW)
    assert.equal(ok.readings.length, 1)
    assert.deepEqual(
      ok.rejections.map((x) => [x.reason, x.index]),
      [['invalid_value', 1]],
    )
    assert.equal(ok.rejections[0].element, `{"x":${nest(LIMITS.maxDepth - 2, '1')}}`)
    tooDeep(at(LIMITS.maxDepth + 1))
    tooDeep(nest(LIMITS.maxDepth + 1))
    assert.equal(parsePayload(nest(LIMITS.maxDepth), 'd', NOW).rejections[0].reason, 'not_an_object')
  })

  test('an array of 1,000,001 elements is refused whole as too_many_readings, one rejection', () => {
    const payload = `[${'0,'.repeat(1_000_000)}0]`
    for (const r of [judgePayload(payload), parsePayload(payload, 'd', NOW)]) {
      assert.deepEqual(
        r.rejections.map((x) => x.reason),
        ['too_many_readings'],
      )
      assert.match(r.rejections[0].detail, /1000001 readings; at most 10000/)
    }
  })

  test('a reading with 100,000 keys is one invalid_value, named as too many values', () => {
    const keys = Array.from({ length: 100_000 }, (_, i) => `"k${i}":1`).join(',')
    for (const payload of [`{${keys}}`, `{"values":{${keys}}}`]) {
      const r = parsePayload(payload, 'd', NOW)
      assert.deepEqual(
        r.rejections.map((x) => x.reason),
        ['invalid_value'],
      )
      assert.match(r.rejections[0].detail, /more than 256 values/)
    }
  })

  test('a detail quotes at most a short piece of the payload', () => {
    const long = 'x'.repeat(100_000)
    for (const payload of [`{"ts":"${long}","v":1}`, `{"${long}":1}`, `{"lat":"${long}"}`]) {
      const r = parsePayload(payload, 'd', NOW)
      assert.equal(r.rejections.length, 1)
      assert.ok(r.rejections[0].detail.length < 200, r.rejections[0].detail.slice(0, 200))
    }
  })
})
