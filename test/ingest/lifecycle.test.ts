import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { build } from '../../src/ingest/index.js'
import type { Envelope } from '../../src/queue/types.js'
import type { Store } from '../../src/store/index.js'
import { openClient, publish } from '../gateway/mqtt/helpers.js'
import { freshStore, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { latest, rows } from '../helpers/stored.js'

const T0 = Date.parse('2026-11-23T08:00:00Z')

describe('ingest: readings of a device deleted or retired while queued are quarantined, not stored', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  const telemetry = async (deviceId: string) =>
    (
      await store.pool.query(
        'SELECT msg_id FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ORDER BY msg_id',
        [deviceId],
      )
    ).rows.map((r) => r.msg_id)
  const quarantine = async (deviceId: string) =>
    (
      await store.pool.query(
        'SELECT source_id, reason, acked, convert_from(payload, $2) AS payload FROM quarantine WHERE device_id = $1 ORDER BY source_id',
        [deviceId, 'UTF8'],
      )
    ).rows

  test('a batch for a live, a deleted and a retired device stores the live one and quarantines the others whole', async () => {
    for (const id of ['live', 'deleted', 'retired'])
      await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
    const env = (id: string, deviceId: string, payload: string): Envelope => ({
      id,
      deviceId,
      transport: 'mqtt',
      topic: `devices/${deviceId}/telemetry`,
      receivedAt: T0,
      payload: Buffer.from(payload),
    })
    // The retired device had a reading stored before it went: its latest values stay as they were.
    const early = build([env('early', 'retired', `{"msgId":"r0","ts":${T0 - 1000},"a":0}`)])
    assert.equal((await store.writeBatch(early.batch, early.quarantine)).stored, 1)
    assert.equal(await store.devices.delete('deleted'), true)
    assert.equal(await store.devices.retire('retired'), 'retired')

    const deletedPayload = `[{"msgId":"d1","ts":${T0},"a":1},{"msgId":"d2","ts":${T0 + 1},"a":2}]`
    const retiredPayload = `[{"msgId":"r1","ts":${T0 + 2},"a":3},{"msgId":"r2","ts":${T0 + 3},"a":4}]`
    const items = [
      env('e1', 'live', `{"msgId":"l1","ts":${T0},"a":1}`),
      env('e2', 'deleted', deletedPayload),
      env('e3', 'live', `[{"msgId":"l2","ts":${T0 + 5},"a":2}]`),
      env('e4', 'retired', retiredPayload),
    ]
    const { batch, quarantine: refused } = build(items)
    assert.deepEqual(refused, [])
    const r = await store.writeBatch(batch, refused)
    assert.deepEqual(r, { stored: 2, duplicate: 0, quarantined: 4, rejected: 0 })
    assert.deepEqual(await telemetry('live'), ['l1', 'l2'])
    assert.deepEqual(await telemetry('deleted'), [])
    assert.deepEqual(await telemetry('retired'), ['r0'])
    assert.deepEqual(await quarantine('deleted'), [
      { source_id: 'e2', reason: 'device_deleted', acked: true, payload: deletedPayload },
    ])
    assert.deepEqual(await quarantine('retired'), [
      { source_id: 'e4', reason: 'device_deleted', acked: true, payload: retiredPayload },
    ])
    assert.deepEqual((await store.queries.latest('live'))!.values, { a: { ts: T0 + 5, value: 2 } })
    assert.deepEqual((await store.queries.latest('retired'))!.values, { a: { ts: T0 - 1000, value: 0 } })

    // Delivered again (a crash before the queue heard of the commit): every reading is a duplicate now.
    const again = build(items)
    assert.deepEqual(await store.writeBatch(again.batch, again.quarantine), {
      stored: 0,
      duplicate: 6,
      quarantined: 0,
      rejected: 0,
    })
    assert.equal((await quarantine('deleted')).length, 1)
  })
})

describe('ingest: a device deleted while its acked readings wait in the queue', () => {
  let gateway: Platform | undefined
  let ingest: Platform | undefined
  after(async () => {
    await ingest?.stop()
    await gateway?.stop()
  })

  test('MQTT and HTTP readings queued before DELETE (data=delete, data=keep) are quarantined as device_deleted once an ingest runs', async () => {
    // No ingest: what is acked waits in the local queue.
    gateway = await startPlatform({ IOTCORE_ROLES: 'api,gateway' })
    const g = gateway
    const expected = new Map<string, string[]>()
    for (const data of ['delete', 'keep'] as const) {
      const dev = await g.createDevice(`gone-${data}`)
      const { client } = await openClient(`mqtt://127.0.0.1:${g.mqttPort}`, 5, dev, {
        clientId: `gone-${data}`,
      })
      const topic = `devices/${dev.id}/telemetry`
      const mqtt = `[{"msgId":"m1","ts":${T0},"speed":1},{"msgId":"m2","ts":${T0 + 1},"speed":2}]`
      const http = `{"msgId":"h1","ts":${T0 + 2},"speed":3}`
      assert.equal(await publish(client, topic, mqtt, 1), undefined)
      assert.equal((await g.postTelemetry(dev, http)).status, 202)
      client.end(true)
      assert.equal((await g.req('DELETE', `/api/v1/devices/${dev.id}?data=${data}`)).status, 204)
      expected.set(dev.id, [http, mqtt].sort())
    }
    assert.equal(await g.metric('iotcore_messages_acked_total'), 6)

    ingest = await startPlatform(
      { IOTCORE_ROLES: 'ingest', IOTCORE_HTTP_PORT: 'off', IOTCORE_MQTT_PORT: 'off' },
      { dataDir: g.dataDir, databaseUrl: g.databaseUrl },
    )
    const i = ingest
    await waitFor(
      async () => (await i.metric('iotcore_messages_quarantined_total')) === 6,
      20_000,
      'the queued readings quarantined',
    )
    assert.equal(await i.metric('iotcore_messages_stored_total'), 0)
    assert.equal(await i.metric('iotcore_messages_duplicate_total'), 0)
    for (const [id, payloads] of expected) {
      const items = await g.quarantine(id)
      assert.deepEqual(
        items.map((x) => [x.reason, x.acked, x.payload]).sort(),
        payloads.map((x) => ['device_deleted', true, x]).sort(),
      )
      assert.deepEqual(await rows(g, id), [], 'nothing stored for a device that is gone')
    }
    // The retired one is still readable, with nothing new in its latest values.
    const kept = [...expected.keys()][1]
    assert.deepEqual(await latest(g, kept), {})
  })
})
