import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { openSse } from '../helpers/sse.js'

describe('the live stream across processes', () => {
  let ingest: Platform
  let api: Platform
  before(async () => {
    // Two platforms on one database: devices publish to the first, whose ingest stores; the second only serves
    // the API, and its stream hears of the first's commits through PostgreSQL.
    ingest = await startPlatform()
    api = await startPlatform({ IOTCORE_ROLES: 'api' }, { databaseUrl: ingest.databaseUrl })
  })
  let apiStopped = false
  after(async () => {
    if (!apiStopped) await api?.stop()
    await ingest?.stop()
  })

  test("an API process's stream carries what another process's ingest stored, and the ingest rate", async () => {
    const dev = await ingest.createDevice('elsewhere')
    const sse = await openSse(`${api.api}/stream?topics=telemetry,status,ingest`)
    try {
      await sse.next('ready')
      assert.equal((await ingest.postTelemetry(dev, { msgId: 'm1', speed: 33 })).status, 202)
      const e = await sse.next('telemetry', (d) => d.some((u: any) => u.id === dev.id))
      assert.equal(e.data.find((u: any) => u.id === dev.id).latest.speed.value, 33)
      await sse.next('ingest', (d) => d.stored >= 1)
      // A device created through the other process shows as a status change here.
      const other = await ingest.createDevice('made-there')
      await sse.next('status', (d) =>
        d.some((x: any) => x.id === other.id && x.device?.name === 'made-there'),
      )
    } finally {
      sse.close()
    }
  })

  test('a stopping process ends its open streams rather than waiting for them', async () => {
    const sse = await openSse(`${api.api}/stream`)
    await sse.next('ready')
    apiStopped = true
    await api.stop()
    assert.equal(await sse.ended, true)
  })
})

describe('the live stream and alerts', () => {
  test('alert changes are announced on the alerts topic, once committed', async () => {
    const p = await startPlatform({ IOTCORE_OFFLINE_AFTER: '1', IOTCORE_CHECK_INTERVAL: '1' })
    const sse = await openSse(`${p.api}/stream?topics=alerts`)
    try {
      await sse.next('ready')
      const dev = await p.createDevice('goes-quiet')
      assert.equal((await p.postTelemetry(dev, { v: 1 })).status, 202)
      const offline = async () =>
        (await p.req('GET', `/api/v1/alerts?deviceId=${dev.id}&type=offline`)).body.items[0]
      const alert = await waitFor(offline)
      // Its opening was announced...
      await sse.next('alerts')
      // ...and so is acknowledging it.
      const from = sse.events.length
      assert.equal((await p.req('POST', `/api/v1/alerts/${alert.id}/ack`)).status, 200)
      await sse.next('alerts', () => true, from)
      assert.equal((await offline()).acknowledged, true)
    } finally {
      sse.close()
      await p.stop()
    }
  })
})
