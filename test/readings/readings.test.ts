import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { deriveMsgId, parsePayload } from '../../src/readings/index.js'

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
