import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

describe('quarantine', () => {
  let p: Platform
  let dev: { id: string; token: string }
  const send = (body: string) => p.postTelemetry(dev, body)
  const find = (reason: string, payload: string) =>
    waitFor(
      async () => (await p.quarantine(dev.id, reason)).find((i) => i.payload === payload),
      20_000,
      `the ${reason} payload in quarantine`,
    )

  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('q')
  })
  after(() => p.stop())

  test('filters by device, reason and time', async () => {
    await send('{"speed": "fast", "lat": 999}')
    const item = await find('invalid_value', '{"speed": "fast", "lat": 999}')
    assert.match(item.detail, /lat/)
    const other = await p.createDevice('other')
    assert.equal((await p.quarantine(other.id)).length, 0)
    assert.equal((await p.quarantine(dev.id, 'malformed_json')).length, 0)
    const future = Date.now() + 3_600_000
    assert.equal(
      (await p.req('GET', `/api/v1/quarantine?deviceId=${dev.id}&from=${future}`)).body.items.length,
      0,
    )
    assert.ok(
      (await p.req('GET', `/api/v1/quarantine?deviceId=${dev.id}&to=${future}`)).body.items.length >= 1,
    )
  })

  test('replay with a corrected body stores it, once', async () => {
    await send('{"msgId":"fix-me","ts":1732330000000,"temp":"21,5"')
    const item = await find('malformed_json', '{"msgId":"fix-me","ts":1732330000000,"temp":"21,5"')
    const r = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {
      body: { msgId: 'fix-me', ts: 1732330000000, temp: 21.5 },
    })
    assert.equal(r.status, 202)
    assert.equal(r.body.accepted, 1)
    await waitFor(
      async () =>
        (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=temp`)).body.temp.length === 1,
    )
    const t = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=temp`)
    assert.deepEqual(t.body.temp, [{ ts: 1732330000000, value: 21.5 }])
    const again = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {})
    assert.equal(again.status, 409)
    assert.equal(again.body.code, 'IOT_ERR_QUARANTINE_REPLAYED')
    const listed = (await p.quarantine(dev.id, 'malformed_json'))[0]
    assert.ok(listed.replayedAt)
  })

  test('replay without a body resends the stored payload; a still-invalid one is 400 and stays replayable', async () => {
    await send('{"ts":"not a time","v":1}')
    const item = await find('invalid_ts', '{"ts":"not a time","v":1}')
    const r = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {})
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_INVALID_READING')
    const ok = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {
      body: { ts: 1732330000000, v: 1 },
    })
    assert.equal(ok.status, 202)
  })

  test('a too_deep payload replayed as it was, or corrected into 100,000 levels, is 400 and stays replayable', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000)
    assert.equal((await send(deep)).status, 400)
    const item = await find('too_deep', deep)
    const asItWas = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {})
    assert.equal(asItWas.status, 400)
    assert.equal(asItWas.body.code, 'IOT_ERR_INVALID_READING')
    assert.match(asItWas.body.message, /deeper than 16 levels/)
    const corrected = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, `{"body":${deep}}`)
    assert.equal(corrected.status, 400)
    assert.equal(corrected.body.code, 'IOT_ERR_INVALID_READING')
    assert.match(corrected.body.message, /deeper than 16 levels/)
    const ok = await p.req('POST', `/api/v1/quarantine/${item.id}/replay`, {
      body: { msgId: 'was-deep', ts: 1732330000000, flat: 1 },
    })
    assert.equal(ok.status, 202)
  })

  test('replaying an unknown id is 404', async () => {
    assert.equal((await p.req('POST', '/api/v1/quarantine/999999/replay', {})).status, 404)
    assert.equal((await p.req('POST', '/api/v1/quarantine/abc/replay', {})).status, 404)
  })
})
