import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { nest } from '../helpers/payloads.js'

describe('HTTP ingest', () => {
  let p: Platform
  let dev: { id: string; token: string }
  before(async () => {
    p = await startPlatform({ IOTCORE_MAX_PAYLOAD_BYTES: '4096' })
    dev = await p.createDevice('http-dev')
  })
  after(() => p.stop())

  const post = (body: string) => p.postTelemetry(dev, body)

  test('202 {accepted} comes only once the readings are in the durable queue or already stored', async () => {
    const r = await post(
      '[{"msgId":"h1","ts":1732330000000,"speed":1},{"msgId":"h2","ts":1732330001000,"speed":2}]',
    )
    assert.equal(r.status, 202)
    assert.deepEqual(await r.json(), { accepted: 2 })
    const { rows } = await p.app.store.pool.query(
      'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
      [dev.id],
    )
    assert.ok(rows[0].n + p.app.queue.stats().depth >= 1, 'acked data is either queued or stored')
    await waitFor(
      async () =>
        (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed`)).body.speed?.length === 2,
    )
  })

  test('a bad or missing token is 401 with a code, and nothing is queued', async () => {
    const before = await p.metric('iotcore_messages_received_total')
    const bad = await p.postTelemetry({ id: dev.id, token: 'iot_wrong' }, '{"x":1}')
    assert.equal(bad.status, 401)
    assert.equal((await bad.json()).code, 'IOT_ERR_UNAUTHORIZED')
    const none = await fetch(`${p.api}/devices/${dev.id}/telemetry`, { method: 'POST', body: '{"x":1}' })
    assert.equal(none.status, 401)
    const other = await p.createDevice('other')
    assert.equal(
      (await p.postTelemetry({ id: dev.id, token: other.token }, '{"x":1}')).status,
      401,
      "one device's token cannot write as another",
    )
    assert.equal(await p.metric('iotcore_messages_received_total'), before)
  })

  test('malformed JSON is 400 and quarantined with its raw body', async () => {
    const r = await post('{"speed": 12,')
    assert.equal(r.status, 400)
    const body = await r.json()
    assert.equal(body.code, 'IOT_ERR_MALFORMED_JSON')
    assert.match(body.message, /not valid JSON/)
    const q = await waitFor(async () => {
      const l = await p.quarantine(dev.id, 'malformed_json')
      return l.length > 0 ? l : undefined
    })
    assert.equal(q[0].payload, '{"speed": 12,')
    assert.equal(q[0].acked, false)
  })

  for (const [name, body, reason] of [
    ['a non-object reading', '42', 'not_an_object'],
    ['a value of an unsupported type', '{"speed": {"a": 1}}', 'invalid_value'],
    ['a null value', '{"speed": null}', 'invalid_value'],
    ['a bad timestamp', '{"ts": "yesterday", "speed": 1}', 'invalid_ts'],
    ['a latitude out of range', '{"lat": 123, "lon": 1}', 'invalid_value'],
    ['no values at all', '{"ts": 1732330000000}', 'no_values'],
    ['an empty array', '[]', 'empty_payload'],
  ] as const) {
    test(`${name} is 400 with a message and quarantined as ${reason}`, async () => {
      const r = await post(body)
      assert.equal(r.status, 400)
      const b = await r.json()
      assert.equal(b.code, 'IOT_ERR_INVALID_READING')
      assert.ok(b.message.length > 10)
      await waitFor(
        async () => {
          return (await p.quarantine(dev.id, reason)).some((i) => i.payload === body)
        },
        20_000,
        `quarantine of ${reason}`,
      )
    })
  }

  test('in a mixed array the valid readings are stored and the bad one quarantined', async () => {
    const r = await post(
      '[{"msgId":"m1","ts":1732340000000,"rpm":1000},{"msgId":"m2","rpm":[1]},{"msgId":"m3","ts":1732340002000,"rpm":3000}]',
    )
    assert.equal(r.status, 202)
    const b = await r.json()
    assert.equal(b.accepted, 2)
    assert.equal(b.quarantined, 1)
    assert.equal(b.errors[0].index, 1)
    await waitFor(
      async () => (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=rpm`)).body.rpm.length === 2,
    )
    const l = await waitFor(async () =>
      (await p.quarantine(dev.id, 'invalid_value')).find((i) => i.payload.includes('"m2"')),
    )
    assert.equal(l.acked, true)
    assert.deepEqual(JSON.parse(l.payload), { msgId: 'm2', rpm: [1] })
  })

  test('a payload over the limit is 413 and quarantined as payload_too_large', async () => {
    const big = JSON.stringify({ note: 'x'.repeat(5000) })
    const r = await post(big)
    assert.equal(r.status, 413)
    assert.equal((await r.json()).code, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    await waitFor(async () => (await p.quarantine(dev.id, 'payload_too_large')).length > 0)
  })

  test('after bad input the endpoint still takes good data', async () => {
    assert.equal((await post('{"msgId":"after","ts":1732350000000,"ok":true}')).status, 202)
    await waitFor(
      async () => (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=ok`)).body.ok.length === 1,
    )
  })
})

describe('HTTP ingest: deep and huge JSON', () => {
  let p: Platform
  let dev: Device
  before(async () => {
    // Room for a 100,000-deep object (600 KB) and a million-element array (2 MB).
    p = await startPlatform({ IOTCORE_MAX_PAYLOAD_BYTES: String(4 * 1024 * 1024) })
    dev = await p.createDevice('deep-dev')
  })
  after(() => p.stop())

  /** The body is refused with a 400 and its code, quarantined whole and unacked, and good data still flows. */
  const refused = async (body: string, reason: string, message: RegExp, tag: string) => {
    const r = await p.postTelemetry(dev, body)
    assert.equal(r.status, 400)
    const b = await r.json()
    assert.equal(b.code, 'IOT_ERR_INVALID_READING')
    assert.match(b.message, message)
    const item = await waitFor(
      async () => (await p.quarantine(dev.id, reason)).find((i) => i.payload === body),
      20_000,
      `the ${reason} payload in quarantine`,
    )
    assert.equal(item.acked, false)
    assert.equal(item.transport, 'http')
    assert.equal(item.payloadEncoding, 'utf8')
    const next = await p.postTelemetry(dev, { msgId: tag, ts: 1732360000000, after: 1 })
    assert.equal(next.status, 202, 'the next request is served')
    await waitFor(
      async () =>
        (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=after&limit=1000`)).body.after.length >=
        1,
    )
  }

  test('100,000 nested arrays are 400 and quarantined whole as too_deep', async () => {
    await refused(nest(100_000), 'too_deep', /deeper than 16 levels/, 'a1')
  })

  test('100,000 nested objects are 400 and quarantined whole as too_deep', async () => {
    await refused(`${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`, 'too_deep', /deeper than 16/, 'a2')
  })

  test('100,000 levels inside values refuse the whole array, its good readings included', async () => {
    const body = `[{"msgId":"beside","ts":1732360001000,"good":1},{"values":{"x":${nest(100_000, '1')}}}]`
    await refused(body, 'too_deep', /deeper than 16/, 'a3')
    assert.deepEqual(
      (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=good`)).body.good,
      [],
      'nothing of a refused payload is stored',
    )
  })

  test('an array of a million elements is 400 and quarantined whole as too_many_readings', async () => {
    await refused(`[${'0,'.repeat(999_999)}0]`, 'too_many_readings', /1000000 readings; at most 10000/, 'a4')
  })

  test('10,001 valid readings are 400 and quarantined whole as too_many_readings', async () => {
    const body = JSON.stringify(Array.from({ length: 10_001 }, (_, i) => ({ msgId: `big${i}`, big: i })))
    await refused(body, 'too_many_readings', /10001 readings/, 'a5')
    assert.deepEqual((await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=big`)).body.big, [])
  })
})
