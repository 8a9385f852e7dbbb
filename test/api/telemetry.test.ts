import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

const T0 = Date.parse('2026-11-23T08:00:00Z')

describe('telemetry queries', () => {
  let p: Platform
  let dev: { id: string; token: string }
  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('q-dev')
    // 10 readings a minute apart: speed 10..100, a string and a boolean on some, one ISO timestamp.
    const readings = Array.from({ length: 10 }, (_, i) => ({
      msgId: `r${i}`,
      ts: i === 3 ? new Date(T0 + i * 60_000).toISOString() : T0 + i * 60_000,
      values: { speed: (i + 1) * 10, ...(i % 2 === 0 ? { gear: `g${i}`, moving: i > 0 } : {}) },
    }))
    const r = await p.postTelemetry(dev, readings)
    assert.equal(r.status, 202)
    await waitFor(async () => (await p.metric('iotcore_messages_stored_total')) === 10)
  })
  after(() => p.stop())

  test('raw points come back newest first with numbers as numbers and ms timestamps', async () => {
    const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed,gear,moving`)
    assert.equal(r.status, 200)
    assert.equal(r.body.speed.length, 10)
    assert.deepEqual(r.body.speed[0], { ts: T0 + 9 * 60_000, value: 100 })
    assert.deepEqual(r.body.speed[9], { ts: T0, value: 10 })
    assert.equal(typeof r.body.speed[0].value, 'number')
    assert.deepEqual(r.body.gear[0], { ts: T0 + 8 * 60_000, value: 'g8' })
    assert.equal(r.body.moving[0].value, true)
    assert.equal(r.body.moving.at(-1).value, false)
  })

  test('an ISO 8601 ts is stored at the same instant as its ms form', async () => {
    const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed&order=asc`)
    assert.deepEqual(r.body.speed[3], { ts: T0 + 3 * 60_000, value: 40 })
  })

  test('from is inclusive, to exclusive, in ms or ISO 8601; limit and order apply per key', async () => {
    const from = new Date(T0 + 2 * 60_000).toISOString()
    const r = await p.req(
      'GET',
      `/api/v1/devices/${dev.id}/telemetry?keys=speed&from=${from}&to=${T0 + 5 * 60_000}&order=asc`,
    )
    assert.deepEqual(
      r.body.speed.map((x: { value: number }) => x.value),
      [30, 40, 50],
    )
    const l = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed&limit=2`)
    assert.deepEqual(
      l.body.speed.map((x: { value: number }) => x.value),
      [100, 90],
    )
  })

  test('aggregates one point per bucket: avg, min, max, sum, count', async () => {
    const q = (agg: string) =>
      p.req(
        'GET',
        `/api/v1/devices/${dev.id}/telemetry?keys=speed&agg=${agg}&interval=5m&order=asc&from=${T0}&to=${T0 + 10 * 60_000}`,
      )
    const avg = await q('avg')
    assert.equal(avg.status, 200)
    assert.deepEqual(avg.body.speed, [
      { ts: T0, value: 30 },
      { ts: T0 + 5 * 60_000, value: 80 },
    ])
    assert.deepEqual(
      (await q('min')).body.speed.map((x: { value: number }) => x.value),
      [10, 60],
    )
    assert.deepEqual(
      (await q('max')).body.speed.map((x: { value: number }) => x.value),
      [50, 100],
    )
    assert.deepEqual(
      (await q('sum')).body.speed.map((x: { value: number }) => x.value),
      [150, 400],
    )
    assert.deepEqual(
      (await q('count')).body.speed.map((x: { value: number }) => x.value),
      [5, 5],
    )
    const hourly = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed&agg=avg&interval=1h`)
    assert.deepEqual(hourly.body.speed, [{ ts: T0, value: 55 }])
  })

  test('latest has each key at its newest ts', async () => {
    const r = await p.req('GET', `/api/v1/devices/${dev.id}/latest`)
    assert.equal(r.status, 200)
    assert.equal(r.body.ts, T0 + 9 * 60_000)
    assert.deepEqual(r.body.values.speed, { ts: T0 + 9 * 60_000, value: 100 })
    assert.deepEqual(r.body.values.gear, { ts: T0 + 8 * 60_000, value: 'g8' })
  })

  test('an older reading arriving late does not overwrite latest', async () => {
    const d = await p.createDevice('late')
    const send = (body: unknown) => p.postTelemetry(d, body)
    await send({ msgId: 'new', ts: T0 + 1000, temp: 2 })
    await waitFor(async () => (await p.req('GET', `/api/v1/devices/${d.id}/latest`)).body.ts === T0 + 1000)
    await send({ msgId: 'old', ts: T0, temp: 1 })
    await waitFor(
      async () => (await p.req('GET', `/api/v1/devices/${d.id}/telemetry?keys=temp`)).body.temp.length === 2,
    )
    assert.deepEqual((await p.req('GET', `/api/v1/devices/${d.id}/latest`)).body.values.temp, {
      ts: T0 + 1000,
      value: 2,
    })
  })

  test('last seen and online follow the data', async () => {
    const r = await p.req('GET', `/api/v1/devices/${dev.id}`)
    assert.equal(r.body.online, true)
    assert.ok(Date.parse(r.body.lastSeenAt) > Date.now() - 600_000)
  })

  test('bad query parameters are 400 with a message; an unknown device is 404', async () => {
    const bad = [
      'keys=speed&from=yesterday',
      'keys=speed&agg=avg',
      'keys=speed&agg=median&interval=1m',
      'keys=speed&agg=avg&interval=5 minutes',
      `keys=speed&agg=avg&interval=1ms&from=0&to=${T0}`,
      'keys=',
    ]
    for (const q of bad) {
      const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?${q}`)
      assert.equal(r.status, 400, q)
      assert.ok(r.body.message, q)
    }
    assert.equal((await p.req('GET', '/api/v1/devices/nobody/telemetry?keys=a')).status, 404)
    assert.equal((await p.req('GET', '/api/v1/devices/nobody/latest')).status, 404)
  })

  test('acked = stored + duplicate + quarantined once the queue is empty', async () => {
    await waitFor(() => p.app.queue.stats().depth === 0 && p.app.queue.appending === 0)
    await waitFor(async () => {
      const acked = await p.metric('iotcore_messages_acked_total')
      const sum =
        (await p.metric('iotcore_messages_stored_total')) +
        (await p.metric('iotcore_messages_duplicate_total')) +
        (await p.metric('iotcore_messages_quarantined_total'))
      return acked > 0 && acked === sum
    })
  })
})
