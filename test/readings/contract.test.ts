/**
 * The reading contract end to end (issue 13, cases 1 and 3 to 5 and 8 for readings): what a gateway acks is
 * what is stored, over HTTP and MQTT.js 3.1.1 and 5, checked in the telemetry rows, the latest values and the
 * quarantine, not only in the answers.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Device } from '../helpers/index.js'
import { latest, quarantined, rows } from '../helpers/stored.js'
import { MqttSuite, publish } from '../gateway/mqtt/helpers.js'

/** 2026-11-23T08:00:00Z */
const T0 = 1_795_420_800_000
const PAYLOAD_FORMAT_INVALID = 0x99

describe('the reading contract, end to end', () => {
  const s = new MqttSuite()

  /** Posts over HTTP; returns the status and the parsed body. */
  const post = async (d: Device, body: string) => {
    const r = await s.p.postTelemetry(d, body)
    return { status: r.status, body: await r.json() }
  }

  /** A refused HTTP body: 400 IOT_ERR_INVALID_READING with a message matching `message`. */
  const refused = async (d: Device, body: string, message: RegExp) => {
    const r = await post(d, body)
    assert.equal(r.status, 400, body)
    assert.equal(r.body.code, 'IOT_ERR_INVALID_READING', body)
    assert.match(r.body.message, message, body)
  }

  /**
   * Publishes each payload at QoS 1 with MQTT.js: v5 is refused with PUBACK 0x99 and quarantined unacked; v3.1.1
   * has no negative ack, so it is acked and the ingest quarantines it, acked. Returns what the quarantine should
   * then hold.
   */
  const published = async (version: 4 | 5, d: Device, reason: string, payloads: string[]) => {
    const client = await s.client(version, d)
    for (const payload of payloads) {
      const err = await publish(client, `devices/${d.id}/telemetry`, payload, 1)
      if (version === 5) assert.equal(err?.code, PAYLOAD_FORMAT_INVALID, payload)
      else assert.equal(err, undefined, payload)
    }
    return payloads.map((x) => [reason, version === 4, x] as [string, boolean, string])
  }

  const sorted = <T>(xs: T[]) => [...xs].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))

  test('case 1: a key both flat and in values is refused over HTTP as duplicate_key; nothing of it is stored', async () => {
    const d = await s.p.createDevice('duplicate-http')
    const bodies = ['{"msgId":"p","values":{"lat":10},"lat":100}', '{"values":{"a":1},"a":2}']
    await refused(d, bodies[0], /"lat" is both a top-level value and in values/)
    await refused(d, bodies[1], /"a" is both a top-level value and in values/)
    const mixed = await post(d, `[{"msgId":"ok","ts":${T0},"a":1},{"msgId":"dup","values":{"a":1},"a":2}]`)
    assert.equal(mixed.status, 202)
    assert.equal(mixed.body.accepted, 1)
    assert.deepEqual(
      mixed.body.errors.map((e: { index: number; reason: string }) => [e.index, e.reason]),
      [[1, 'duplicate_key']],
    )
    assert.deepEqual(
      sorted(await quarantined(s.p, d.id)),
      sorted([
        ['duplicate_key', false, bodies[0]],
        ['duplicate_key', false, bodies[1]],
        ['duplicate_key', true, '{"msgId":"dup","values":{"a":1},"a":2}'],
      ]),
    )
    assert.deepEqual(await rows(s.p, d.id), [{ msgId: 'ok', ts: T0, values: { a: 1 } }])
    assert.deepEqual(await latest(s.p, d.id), { a: { ts: T0, value: 1 } })
  })

  for (const version of [4, 5] as const) {
    test(`case 1 over MQTT ${version === 4 ? '3.1.1' : '5'}: duplicate_key, never acked as valid then refused`, async () => {
      const d = await s.p.createDevice(`duplicate-mqtt${version}`)
      const expected = await published(version, d, 'duplicate_key', [
        `{"msgId":"p","ts":${T0},"values":{"lat":10},"lat":100}`,
        `{"ts":${T0},"values":{"a":1},"a":2}`,
      ])
      assert.deepEqual(sorted(await quarantined(s.p, d.id)), sorted(expected))
      assert.deepEqual(await rows(s.p, d.id), [])
      assert.deepEqual(await latest(s.p, d.id), {})
    })
  }

  test('case 3: __proto__, constructor and prototype are refused as reserved_key, never stored without them', async () => {
    const d = await s.p.createDevice('reserved-http')
    const bodies = [
      '{"msgId":"p","__proto__":5}',
      '{"__proto__":"x","a":1}',
      '{"msgId":"c","constructor":1,"a":1}',
      '{"msgId":"q","values":{"prototype":true,"a":1}}',
      '{"msgId":"t","values":{"ts":1,"a":1}}',
    ]
    for (const b of bodies) await refused(d, b, /is reserved|reading's own fields/)
    assert.deepEqual(
      sorted(await quarantined(s.p, d.id)),
      sorted(bodies.map((b) => ['reserved_key', false, b])),
    )
    assert.deepEqual(await rows(s.p, d.id), [])
    assert.deepEqual(await latest(s.p, d.id), {})
  })

  for (const version of [4, 5] as const) {
    test(`case 3 over MQTT ${version === 4 ? '3.1.1' : '5'}: reserved_key`, async () => {
      const d = await s.p.createDevice(`reserved-mqtt${version}`)
      const expected = await published(version, d, 'reserved_key', [
        '{"msgId":"p","__proto__":5}',
        '{"constructor":1,"a":1}',
      ])
      assert.deepEqual(sorted(await quarantined(s.p, d.id)), sorted(expected))
      assert.deepEqual(await rows(s.p, d.id), [])
    })
  }

  test('case 4: without ts nor msgId each request is a new reading, and identical ones in a message each count', async () => {
    const d = await s.p.createDevice('stamped-http')
    for (const body of ['{"speed":77}', '{"speed":77}', '[{"pulse":1},{"pulse":1}]']) {
      const r = await post(d, body)
      assert.equal(r.status, 202)
    }
    await quarantined(s.p, d.id)
    const stored = await rows(s.p, d.id)
    assert.equal(stored.length, 4)
    assert.equal(stored.filter((r) => r.values.pulse === 1).length, 2, 'accepted 2, stored 2')
    assert.equal(stored.filter((r) => r.values.speed === 77).length, 2, 'two requests, two readings')
  })

  for (const version of [4, 5] as const) {
    test(`case 4 over MQTT ${version === 4 ? '3.1.1' : '5'}: identical readings without ts in one message are each stored`, async () => {
      const d = await s.p.createDevice(`stamped-mqtt${version}`)
      const client = await s.client(version, d)
      assert.equal(
        await publish(client, `devices/${d.id}/telemetry`, '[{"pulse":1},{"pulse":1},{"pulse":2}]', 1),
        undefined,
      )
      await quarantined(s.p, d.id)
      const stored = await rows(s.p, d.id)
      assert.equal(stored.length, 3)
      assert.equal(new Set(stored.map((r) => r.ts)).size, 1, 'stamped once, at receipt')
    })
  }

  test('case 5: ts is ms or RFC 3339 with an offset; anything else is invalid_ts with the accepted forms', async () => {
    const d = await s.p.createDevice('ts-http')
    const bad = ['{"ts":"1","v":1}', '{"ts":"Nov 23 2026","v":1}', '{"ts":"2026-11-23T08:00:00","v":1}']
    for (const b of bad)
      await refused(d, b, /send a number of ms since the epoch .* or an RFC 3339 date-time with an offset/)
    assert.equal((await post(d, '{"msgId":"z","ts":"2026-11-23T10:00:00+02:00","v":1}')).status, 202)
    assert.equal((await post(d, `{"msgId":"n","ts":${T0 + 1}.9,"v":2}`)).status, 202)
    assert.deepEqual(sorted(await quarantined(s.p, d.id)), sorted(bad.map((b) => ['invalid_ts', false, b])))
    assert.deepEqual(await rows(s.p, d.id), [
      { msgId: 'n', ts: T0 + 1, values: { v: 2 } },
      { msgId: 'z', ts: T0, values: { v: 1 } },
    ])
    assert.deepEqual(await latest(s.p, d.id), { v: { ts: T0 + 1, value: 2 } })
  })

  for (const version of [4, 5] as const) {
    test(`case 5 over MQTT ${version === 4 ? '3.1.1' : '5'}: invalid_ts`, async () => {
      const d = await s.p.createDevice(`ts-mqtt${version}`)
      const expected = await published(version, d, 'invalid_ts', [
        '{"ts":"1","v":1}',
        '{"ts":"Nov 23 2026","v":1}',
      ])
      assert.deepEqual(sorted(await quarantined(s.p, d.id)), sorted(expected))
      assert.deepEqual(await rows(s.p, d.id), [])
    })
  }

  test('case 8: text PostgreSQL cannot store is refused at the gateway as unstorable_text, never database_rejected', async () => {
    const d = await s.p.createDevice('text-http')
    const bodies = [
      '{"msgId":"s","v":"\\ud800"}',
      '{"msgId":"k","values":{"a\\u0000":1}}',
      '{"msgId":"m\\u0000","v":1}',
    ]
    for (const b of bodies) await refused(d, b, /which PostgreSQL cannot store/)
    const mixed = await post(
      d,
      `[{"msgId":"good","ts":${T0},"v":"ok \\ud83d\\ude00"},{"msgId":"bad","v":"x\\udfff"}]`,
    )
    assert.equal(mixed.status, 202)
    assert.deepEqual(
      mixed.body.errors.map((e: { index: number; reason: string }) => [e.index, e.reason]),
      [[1, 'unstorable_text']],
    )
    assert.deepEqual(
      sorted(await quarantined(s.p, d.id)),
      sorted([
        ...bodies.map((b) => ['unstorable_text', false, b] as [string, boolean, string]),
        ['unstorable_text', true, '{"msgId":"bad","v":"x\\udfff"}'],
      ]),
    )
    assert.deepEqual(await rows(s.p, d.id), [{ msgId: 'good', ts: T0, values: { v: 'ok 😀' } }])
    assert.deepEqual(await latest(s.p, d.id), { v: { ts: T0, value: 'ok 😀' } })
  })

  for (const version of [4, 5] as const) {
    test(`case 8 over MQTT ${version === 4 ? '3.1.1' : '5'}: unstorable_text`, async () => {
      const d = await s.p.createDevice(`text-mqtt${version}`)
      const expected = await published(version, d, 'unstorable_text', [
        '{"msgId":"s","v":"\\ud800"}',
        '{"msgId":"z","v":"a\\u0000"}',
      ])
      assert.deepEqual(sorted(await quarantined(s.p, d.id)), sorted(expected))
      assert.deepEqual(await rows(s.p, d.id), [])
    })
  }
})
