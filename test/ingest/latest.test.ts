import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { MqttSuite, publish } from '../gateway/mqtt/helpers.js'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { drained, latest, rows } from '../helpers/stored.js'

/** acked = stored + duplicate + quarantined, once everything queued is through the ingest. */
async function countersAddUp(p: Platform): Promise<void> {
  await drained(p)
  await waitFor(
    async () => {
      const [acked, stored, dup, quar] = await Promise.all(
        [
          'iotcore_messages_acked_total',
          'iotcore_messages_stored_total',
          'iotcore_messages_duplicate_total',
          'iotcore_messages_quarantined_total',
        ].map((m) => p.metric(m)),
      )
      return acked > 0 && acked === stored + dup + quar
    },
    20_000,
    'acked = stored + duplicate + quarantined',
  )
}

describe('latest values come from the readings stored: the first of a msgId wins, in latest too', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  test('HTTP: a msgId repeated in one array, then in a later request: telemetry and latest both keep the first', async () => {
    const d = await p.createDevice('first-wins-http')
    const first = await p.postTelemetry(d, [
      { msgId: 'x', ts: 1000, temp: 10 },
      { msgId: 'x', ts: 2000, temp: 99 },
    ])
    assert.equal(first.status, 202)
    await drained(p)
    assert.deepEqual(await rows(p, d.id), [{ msgId: 'x', ts: 1000, values: { temp: 10 } }])
    assert.deepEqual(await latest(p, d.id), { temp: { ts: 1000, value: 10 } })

    // Newer, but a repeat of a stored msgId: not stored, so not latest either.
    assert.equal((await p.postTelemetry(d, { msgId: 'x', ts: 3000, temp: 55 })).status, 202)
    await drained(p)
    assert.deepEqual(await rows(p, d.id), [{ msgId: 'x', ts: 1000, values: { temp: 10 } }])
    assert.deepEqual(await latest(p, d.id), { temp: { ts: 1000, value: 10 } })

    // A batch mixing a repeat and a new reading (the dedup path): only the new one reaches latest.
    const mixed = await p.postTelemetry(d, [
      { msgId: 'x', ts: 9000, temp: 77, door: 'open' },
      { msgId: 'y', ts: 2000, hum: 40 },
      { msgId: 'y', ts: 8000, hum: 41 },
    ])
    assert.equal(mixed.status, 202)
    await drained(p)
    assert.deepEqual(await rows(p, d.id), [
      { msgId: 'x', ts: 1000, values: { temp: 10 } },
      { msgId: 'y', ts: 2000, values: { hum: 40 } },
    ])
    assert.deepEqual(await latest(p, d.id), {
      temp: { ts: 1000, value: 10 },
      hum: { ts: 2000, value: 40 },
    })
    await countersAddUp(p)
  })

  test('values named after Object.prototype members reach latest like any other key', async () => {
    const d = await p.createDevice('proto-names')
    const values = {
      toString: 1,
      valueOf: 'v',
      hasOwnProperty: true,
      isPrototypeOf: 2.5,
      __defineGetter__: 'g',
    }
    assert.equal((await p.postTelemetry(d, { msgId: 'p1', ts: 1000, ...values })).status, 202)
    await drained(p)
    assert.deepEqual(await rows(p, d.id), [{ msgId: 'p1', ts: 1000, values }])
    const want = (ts: number, v: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(v).map(([k, value]) => [k, { ts, value }]))
    assert.deepEqual(await latest(p, d.id), want(1000, values))
    // And through the dedup path (a repeat beside a new reading), merged per key with what is there.
    const newer = { toString: 3, valueOf: 'w' }
    const r = await p.postTelemetry(d, [
      { msgId: 'p1', ts: 5000, toString: 99 },
      { msgId: 'p2', ts: 2000, ...newer },
    ])
    assert.equal(r.status, 202)
    await drained(p)
    assert.deepEqual(await latest(p, d.id), { ...want(1000, values), ...want(2000, newer) })
  })
})

describe('latest values over MQTT: a repeated msgId is neither stored nor latest', () => {
  const mq = new MqttSuite()

  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 4 ? '3.1.1' : '5'} (MQTT.js): the first reading of a msgId is the one stored and shown as latest`, async () => {
      const d = await mq.p.createDevice(`first-wins-v${version}`)
      const c = await mq.client(version, d)
      const topic = `devices/${d.id}/telemetry`
      const body = '[{"msgId":"x","ts":1000,"temp":10},{"msgId":"x","ts":2000,"temp":99}]'
      assert.equal(await publish(c, topic, body, 1), undefined)
      await drained(mq.p)
      assert.equal(await publish(c, topic, '{"msgId":"x","ts":3000,"temp":55}', 1), undefined)
      await drained(mq.p)
      assert.deepEqual(await rows(mq.p, d.id), [{ msgId: 'x', ts: 1000, values: { temp: 10 } }])
      assert.deepEqual(await latest(mq.p, d.id), { temp: { ts: 1000, value: 10 } })
      assert.deepEqual(await mq.p.quarantine(d.id), [])
      await countersAddUp(mq.p)
    })
  }
})
