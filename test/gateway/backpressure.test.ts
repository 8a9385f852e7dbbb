import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { openClient } from './mqtt/helpers.js'

describe('backpressure, not loss', () => {
  let gateway: Platform | undefined
  let ingest: Platform | undefined
  after(async () => {
    await gateway?.stop()
    await ingest?.stop()
  })

  test('past the disk budget HTTP answers 503 with Retry-After and MQTT 5 gets DISCONNECT 0x97; what was acked is stored once an ingest drains it', async () => {
    // A gateway with no ingest: the local queue only fills.
    gateway = await startPlatform({ IOTCORE_ROLES: 'api,gateway', IOTCORE_QUEUE_MAX_BYTES: '1MiB' })
    const dev = await gateway.createDevice('bp')
    const filler = 'x'.repeat(16_000)
    let accepted = 0
    let refused: Response | undefined
    for (let i = 0; i < 400 && !refused; i++) {
      const r = await fetch(`${gateway.api}/devices/${dev.id}/telemetry`, {
        method: 'POST',
        headers: { authorization: `Bearer ${dev.token}` },
        body: JSON.stringify({ msgId: `f${i}`, ts: 1732330000000 + i, note: filler.slice(0, 4000), i }),
      })
      if (r.status === 202) accepted++
      else refused = r
    }
    assert.ok(refused, 'the budget was reached')
    assert.equal(refused.status, 503)
    assert.equal(refused.headers.get('retry-after'), '5')
    assert.equal((await refused.json()).code, 'IOT_ERR_QUEUE_FULL')
    const ready = await fetch(`${gateway.base}/readyz`)
    assert.equal(ready.status, 503)
    assert.match((await ready.json()).components.queue.detail, /disk budget/)

    const { client } = await openClient(`mqtt://127.0.0.1:${gateway.mqttPort}`, 5, dev, { clientId: 'bp-5' })
    const disconnect = new Promise<{ reasonCode?: number }>((resolve) => client.once('disconnect', resolve))
    client.publish(`devices/${dev.id}/telemetry`, '{"v":1}', { qos: 1 })
    assert.equal((await disconnect).reasonCode, 0x97)
    client.end(true)

    // An ingest process on the same machine (same data dir, same database) drains the queue.
    ingest = await startPlatform(
      { IOTCORE_ROLES: 'ingest', IOTCORE_HTTP_PORT: 'off', IOTCORE_MQTT_PORT: 'off' },
      { dataDir: gateway.dataDir, databaseUrl: gateway.databaseUrl },
    )
    await waitFor(
      async () => (await ingest!.metric('iotcore_messages_stored_total')) === accepted,
      60_000,
      'the backlog stored',
    )
    const { rows } = await ingest.app.store.pool.query(
      'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
      [dev.id],
    )
    assert.equal(rows[0].n, accepted)
  })
})
