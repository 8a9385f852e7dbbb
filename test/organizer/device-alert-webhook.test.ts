import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Receiver } from '../helpers/alerts.js'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { openClient, publish } from '../gateway/mqtt/helpers.js'

const SECRET = 'whsec_e2e_0123456789abcdef'
const T0 = Date.now() - 600_000

/**
 * Issue 15's first "done when", end to end: a device's impossible GPS fixes, published over MQTT, are stored
 * flagged; past IOTCORE_DEVICE_CHECK_VIOLATIONS they open a device_check alert, and a webhook receiver that
 * checks the signature as the README shows accepts its `alert.opened` event.
 */
describe('organizer: a broken GPS, from the device to a signed webhook', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({ IOTCORE_DEVICE_CHECK_VIOLATIONS: '3', IOTCORE_CHECK_INTERVAL: '1' })
  })
  after(() => p.stop())

  test('flagged 0,0 fixes past the threshold open a device_check alert that the webhook receives signed', async () => {
    const receiver = new Receiver(SECRET)
    const hook = await p.req('POST', '/api/v1/webhooks', { url: await receiver.listen(), secret: SECRET })
    assert.equal(hook.status, 201)
    const dev = await p.createDevice('gps-broken')
    const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, 4, dev)
    try {
      const fix = (i: number, lat: number, lon: number) => ({ msgId: `f${i}`, ts: T0 + i * 1000, lat, lon })
      const readings = [fix(0, 37.98, 23.72), fix(1, 0, 0), fix(2, 0, 0)]
      assert.equal(
        await publish(client, `devices/${dev.id}/telemetry`, JSON.stringify(readings), 1),
        undefined,
      )
      // Two flagged readings: under the threshold of three, no alert yet.
      const lat = await waitFor(async () => {
        const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=lat&order=asc`)
        return r.body.lat.length === 3 && r.body.lat
      })
      assert.deepEqual(
        lat.map((x: { flags?: string[] }) => x.flags ?? []),
        [[], ['gps_zero'], ['gps_zero']],
      )
      assert.deepEqual((await p.req('GET', `/api/v1/alerts?deviceId=${dev.id}`)).body.items, [])

      assert.equal(
        await publish(client, `devices/${dev.id}/telemetry`, JSON.stringify(fix(3, 0, 0)), 1),
        undefined,
      )
      const [event] = await waitFor(() => {
        const got = receiver.received.filter((r) => r.event.data.alert?.deviceId === dev.id)
        return got.length > 0 && got
      })
      assert.equal(receiver.refused, 0, 'the signature checks out')
      assert.equal(event.headerId, event.event.id)
      assert.equal(event.event.type, 'alert.opened')
      const alert = event.event.data.alert
      assert.deepEqual(
        [alert.type, alert.status, alert.severity, alert.details.violations],
        ['device_check', 'active', 'major', 3],
      )
      const listed = (await p.req('GET', `/api/v1/alerts?deviceId=${dev.id}&type=device_check`)).body.items
      assert.deepEqual(
        listed.map((a: { id: string }) => a.id),
        [alert.id],
      )
    } finally {
      client.end(true)
      await p.req('DELETE', `/api/v1/webhooks/${hook.body.id}`)
      await receiver.close()
    }
  })
})
