import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { unstorable } from '../../src/lib/text.js'
import { LIMITS, deriveMsgId, judgePayload, parsePayload } from '../../src/readings/index.js'
import { nest } from '../helpers/payloads.js'

const NOW = 1_800_000_000_000
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what a detail must not hold
const RAW = /[\u0000-\u001f\u007f-\u00ff\ufffd]/

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
    ['{"ts":-5,"v":1}', 'invalid_ts'],
    ['{"ts":true,"v":1}', 'invalid_ts'],
    ['{"ts":"2024-13-45","v":1}', 'invalid_ts'],
    ['{"ts":"1","v":1}', 'invalid_ts'],
    ['{"ts":"Nov 23 2026","v":1}', 'invalid_ts'],
    ['{"ts":"2026-11-23T08:00:00","v":1}', 'invalid_ts'],
    ['{"msgId":{},"v":1}', 'invalid_msg_id'],
    ['{"msgId":"","v":1}', 'invalid_msg_id'],
    ['{"v":[1]}', 'invalid_value'],
    ['{"v":null}', 'invalid_value'],
    ['{"v":1e999}', 'invalid_value'],
    ['{"v":"a\\u0000b"}', 'unstorable_text'],
    ['{"values":[1]}', 'invalid_value'],
    ['{"lat":91,"lon":0}', 'invalid_value'],
    ['{"lon":"east"}', 'invalid_value'],
    ['{"ts":1}', 'no_values'],
    ['{"__proto__":5,"v":1}', 'reserved_key'],
    ['{"values":{"__proto__":5}}', 'reserved_key'],
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
      assert.ok(!r.rejections[0].detail.includes('x'.repeat(41)), r.rejections[0].detail.slice(0, 300))
      assert.ok(r.rejections[0].detail.length < 300, r.rejections[0].detail.slice(0, 300))
    }
  })
})

describe('the reading contract: one rule at both ends', () => {
  /** Both ends' verdicts on a payload: judgePayload's (a gateway) and parsePayload's (the ingest). */
  const both = (payload: string) => {
    const judged = judgePayload(payload)
    const parsed = parsePayload(payload, 'd', NOW)
    assert.deepEqual(judged.rejections, parsed.rejections, 'the same rejections at both ends')
    assert.equal(judged.valid, parsed.readings.length, 'the same count of valid readings at both ends')
    return parsed
  }

  test('a key both flat and in values is refused as duplicate_key at both ends, naming it', () => {
    for (const [payload, key] of [
      ['{"msgId":"p","values":{"lat":10},"lat":100}', 'lat'],
      ['{"values":{"a":1},"a":2}', 'a'],
      ['{"values":{"a":1},"a":1}', 'a'],
    ] as const) {
      const r = both(payload)
      assert.equal(r.readings.length, 0)
      assert.deepEqual(
        r.rejections.map((x) => x.reason),
        ['duplicate_key'],
      )
      assert.match(r.rejections[0].detail, new RegExp(`^"${key}" is both a top-level value and in values`))
    }
    const mixed = both('[{"v":1},{"values":{"a":1},"a":2}]')
    assert.deepEqual(
      mixed.rejections.map((x) => [x.index, x.reason]),
      [[1, 'duplicate_key']],
    )
    assert.match(mixed.rejections[0].detail, /^reading 1: "a" is both/)
  })

  test('distinct keys flat and in values make one reading', () => {
    const r = both('{"ts":1000,"msgId":"m","values":{"a":1},"b":"x"}')
    assert.deepEqual(r.readings, [{ ts: 1000, msgId: 'm', values: { a: 1, b: 'x' } }])
  })

  test('__proto__, constructor and prototype are refused as reserved_key in both forms, never dropped', () => {
    for (const key of ['__proto__', 'constructor', 'prototype']) {
      for (const payload of [
        `{"msgId":"p","${key}":5}`,
        `{"${key}":"x","a":1}`,
        `{"values":{"${key}":5,"a":1}}`,
      ]) {
        const r = both(payload)
        assert.equal(r.readings.length, 0, payload)
        assert.deepEqual(
          r.rejections.map((x) => x.reason),
          ['reserved_key'],
          payload,
        )
        assert.match(r.rejections[0].detail, new RegExp(`"${key}".* is reserved`))
      }
    }
  })

  test('ts, msgId and values inside values are refused as reserved_key: a reading means one thing', () => {
    for (const key of ['ts', 'msgId', 'values']) {
      const r = both(`{"values":{"${key}":1,"a":1}}`)
      assert.deepEqual(
        r.rejections.map((x) => x.reason),
        ['reserved_key'],
      )
      assert.match(r.rejections[0].detail, /reading's own fields/)
    }
  })

  for (const [name, payload, where] of [
    ['U+0000 in a string value', '{"v":"a\\u0000"}', /^v: the string holds U\+0000 \(character 2\)/],
    ['an unpaired high surrogate in a string', '{"v":"a\\ud800b"}', /unpaired surrogate U\+D800/],
    ['an unpaired low surrogate in a string', '{"values":{"v":"\\udc00"}}', /unpaired surrogate U\+DC00/],
    ['U+0000 in a key', '{"a\\u0000":1}', /^the key "a\\u0000" holds U\+0000/],
    ['a lone surrogate in a key', '{"values":{"\\ud83d":1}}', /^the key "\\ud83d" holds an unpaired/],
    ['U+0000 in a msgId', '{"msgId":"m\\u0000","v":1}', /^msgId holds U\+0000/],
    ['a lone surrogate in a msgId', '{"msgId":"\\udfff","v":1}', /^msgId holds an unpaired/],
  ] as const) {
    test(`${name} is refused as unstorable_text at both ends, the detail safe to store`, () => {
      const r = both(payload)
      assert.deepEqual(
        r.rejections.map((x) => x.reason),
        ['unstorable_text'],
      )
      assert.match(r.rejections[0].detail, where)
      assert.match(r.rejections[0].detail, /PostgreSQL cannot store/)
      assert.equal(unstorable(r.rejections[0].detail), undefined, 'the detail itself can be stored')
    })
  }

  test('surrogate pairs, escaped or not, and the text \\u0000 written out are stored as sent', () => {
    const r = both('{"msgId":"\\ud83d\\ude00","a":"\\ud83d\\ude00","😀":"😀","b":"\\\\u0000"}')
    assert.deepEqual(r.readings[0].values, { a: '😀', '😀': '😀', b: '\\u0000' })
    assert.equal(r.readings[0].msgId, '😀')
  })

  test('ts follows the time contract: ms or RFC 3339 with an offset; refusals show the accepted forms', () => {
    assert.equal(both('{"ts":"2026-11-23T10:00:00.250+02:00","v":1}').readings[0].ts, 1_795_420_800_250)
    assert.equal(both('{"ts":1795420800250.7,"v":1}').readings[0].ts, 1_795_420_800_250)
    assert.equal(both('{"ts":null,"v":1}').readings[0].ts, NOW, 'null is absent: the receipt time')
    for (const ts of ['"1"', '"Nov 23 2026"', '"2026-11-23T08:00:00"', '"2026-11-23"', 'true', '{}']) {
      const r = both(`{"ts":${ts},"v":1}`)
      assert.equal(r.rejections[0].reason, 'invalid_ts', ts)
      assert.match(
        r.rejections[0].detail,
        /ms since the epoch .* or an RFC 3339 date-time with an offset/,
        ts,
      )
    }
  })

  test('readings without ts nor msgId: stamped at receipt; identical ones in a message are told apart', () => {
    const one = parsePayload('{"v":1}', 'dev1', NOW).readings[0]
    assert.equal(one.msgId, deriveMsgId('dev1', NOW, { v: 1 }), 'the id of a single reading is as before')
    assert.notEqual(one.msgId, parsePayload('{"v":1}', 'dev1', NOW + 1).readings[0].msgId, 'a new receipt')
    const ids = parsePayload('[{"v":1},{"v":2},{"v":1},{"v":1}]', 'dev1', NOW).readings.map((r) => r.msgId)
    const base = deriveMsgId('dev1', NOW, { v: 1 })
    assert.deepEqual(ids, [base, deriveMsgId('dev1', NOW, { v: 2 }), `${base}#2`, `${base}#3`])
    assert.deepEqual(
      parsePayload('[{"v":1},{"v":2},{"v":1},{"v":1}]', 'dev1', NOW).readings.map((r) => r.msgId),
      ids,
      'the same bytes redelivered get the same ids',
    )
    const sameTs = parsePayload(`[{"ts":${NOW},"v":1},{"ts":${NOW},"v":1}]`, 'dev1', 0).readings
    assert.equal(sameTs[0].msgId, sameTs[1].msgId, 'with ts, the same content is the same reading')
  })

  test('with an Idempotency-Key, readings without ts nor msgId get ids from the key, not the receipt time', () => {
    const first = parsePayload('[{"v":1},{"v":1},{"w":2}]', 'dev1', NOW, 'key-1').readings
    const retry = parsePayload('[{"v":1},{"v":1},{"w":2}]', 'dev1', NOW + 60_000, 'key-1').readings
    assert.deepEqual(
      retry.map((r) => r.msgId),
      first.map((r) => r.msgId),
    )
    assert.notEqual(first[0].msgId, first[1].msgId)
    assert.match(first[0].msgId, /^k:/)
    assert.notEqual(parsePayload('{"v":1}', 'dev1', NOW, 'key-2').readings[0].msgId, first[0].msgId)
    assert.notEqual(parsePayload('{"v":1}', 'dev2', NOW, 'key-1').readings[0].msgId, first[0].msgId)
    assert.notEqual(parsePayload('{"v":9}', 'dev1', NOW, 'key-1').readings[0].msgId, first[0].msgId)
    const withTs = parsePayload(`{"ts":${NOW},"v":1}`, 'dev1', 0, 'key-1').readings[0]
    assert.equal(
      withTs.msgId,
      deriveMsgId('dev1', NOW, { v: 1 }),
      'a reading with ts is itself, keyed or not',
    )
    assert.equal(parsePayload('{"msgId":"x","v":1}', 'dev1', NOW, 'key-1').readings[0].msgId, 'x')
  })

  test('a binary payload is malformed_json described by its size and first bytes, never quoted raw', () => {
    const gz = gzipSync('{"v":1}')
    const r = both(gz.toString('latin1'))
    assert.equal(r.rejections[0].reason, 'malformed_json')
    const fromBytes = parsePayload(gz, 'd', NOW).rejections[0]
    assert.equal(fromBytes.reason, 'malformed_json')
    assert.match(
      fromBytes.detail,
      new RegExp(`^${gz.length} bytes of binary, not UTF-8 text \\(starting 1f 8b 08`),
    )
    assert.match(fromBytes.detail, /gzip data/)
    assert.deepEqual(judgePayload(gz).rejections, parsePayload(gz, 'd', NOW).rejections)
    for (const detail of [
      fromBytes.detail,
      r.rejections[0].detail,
      both('\u0001{\u0000').rejections[0].detail,
    ])
      assert.doesNotMatch(detail, RAW, detail)
  })
})
