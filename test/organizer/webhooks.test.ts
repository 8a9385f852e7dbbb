import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { freePort } from '../../src/store/embedded.js'
import { Receiver } from '../helpers/alerts.js'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

const SECRET = 'whsec_test_0123456789abcdef'

describe('organizer: webhook deliveries', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const raise = (deviceId: string, type: string) =>
    p.app.store.alerts.raise([{ subject: { kind: 'device', id: deviceId }, type, severity: 'critical' }])

  /** Opens, acknowledges and clears an alert of `deviceId` through the API; returns its id. */
  async function lifecycle(deviceId: string): Promise<string> {
    const [a] = await raise(deviceId, 'overheat')
    assert.equal((await p.req('POST', `/api/v1/alerts/${a.id}/ack`)).status, 200)
    assert.equal((await p.req('POST', `/api/v1/alerts/${a.id}/clear`)).status, 200)
    return a.id
  }

  /** The events a receiver accepted for one alert, as their types, in the order received. */
  const typesOf = (r: Receiver, alertId: string) =>
    r.received.filter((x) => x.event.data.alert?.id === alertId).map((x) => x.event.type)

  async function webhook(url: string, secret = SECRET): Promise<string> {
    const w = await p.req('POST', '/api/v1/webhooks', { url, secret })
    assert.equal(w.status, 201)
    return w.body.id
  }

  test("a webhook receives an alert's events signed, in order, each with its event id", async () => {
    const receiver = new Receiver(SECRET)
    const id = await webhook(await receiver.listen())
    try {
      const alertId = await lifecycle('wh-1')
      await receiver.waitForCount(3)
      assert.equal(receiver.refused, 0, 'every signature checks out')
      assert.deepEqual(typesOf(receiver, alertId), ['alert.opened', 'alert.acknowledged', 'alert.cleared'])
      for (const r of receiver.received) assert.equal(r.headerId, r.event.id)
      assert.equal(new Set(receiver.received.map((r) => r.event.id)).size, 3)
      const cleared = receiver.received[2].event.data.alert
      assert.equal(cleared.status, 'cleared')
      assert.equal(cleared.acknowledged, true)
      assert.equal(cleared.deviceId, 'wh-1')

      const fired = await p.req('POST', `/api/v1/webhooks/${id}/test`)
      await receiver.waitForCount(4)
      assert.equal(receiver.received[3].event.id, fired.body.eventId)
      assert.equal(receiver.received[3].event.type, 'webhook.test')
    } finally {
      await p.req('DELETE', `/api/v1/webhooks/${id}`)
      await receiver.close()
    }
  })

  test('during a secret rotation each delivery carries a v1 for the old secret and one for the new', async () => {
    const old = new Receiver(SECRET)
    const id = await webhook(await old.listen())
    try {
      const rotated = await p.req('POST', `/api/v1/webhooks/${id}/secret`, {
        secret: 'whsec_rotated_0123456789',
      })
      assert.equal(rotated.status, 200)
      await p.req('POST', `/api/v1/webhooks/${id}/test`)
      await old.waitForCount(1)
      assert.equal(old.refused, 0, 'a receiver still on the old secret accepts it')
    } finally {
      await p.req('DELETE', `/api/v1/webhooks/${id}`)
      await old.close()
    }
  })

  test('a receiver down during the whole outage gets every event afterwards, each once and in order per alert', async () => {
    const port = await freePort()
    const receiver = new Receiver(SECRET)
    const id = await webhook(`http://127.0.0.1:${port}/hooks/iotcore`)
    try {
      const alerts = [await lifecycle('down-1'), await lifecycle('down-2'), await lifecycle('down-3')]
      // Nothing listens there: the first event of each alert is tried, refused, and waits with its backoff;
      // the later ones of each alert wait behind it.
      const deliveries = async () =>
        (await p.req('GET', `/api/v1/webhooks/${id}/deliveries?limit=100`)).body.items
      await waitFor(async () => (await deliveries()).filter((d: any) => d.attempts.length > 0).length >= 3)
      const tried = await deliveries()
      assert.equal(tried.length, 9)
      assert.ok(tried.every((d: any) => d.status === 'pending'))
      for (const d of tried.filter((x: any) => x.attempts.length > 0)) {
        assert.equal(d.eventType, 'alert.opened', 'only the first event of an alert is tried while it fails')
        assert.equal(d.attempts[0].statusCode, null)
        assert.match(d.attempts[0].error, /ECONNREFUSED/)
      }

      await receiver.listen(port)
      await receiver.waitForCount(9)
      await waitFor(async () => (await deliveries()).every((d: any) => d.status === 'delivered'))
      // Delivered is final: nothing is sent again.
      await p.app.organizer!.deliver()
      assert.equal(receiver.received.length, 9)
      assert.equal(receiver.refused, 0)
      assert.equal(new Set(receiver.received.map((r) => r.event.id)).size, 9, 'each event once')
      for (const a of alerts)
        assert.deepEqual(typesOf(receiver, a), ['alert.opened', 'alert.acknowledged', 'alert.cleared'])
    } finally {
      await p.req('DELETE', `/api/v1/webhooks/${id}`)
      await receiver.close()
    }
  })

  test('a receiver answering an error gets the event again until it answers 2xx; every attempt is listed', async () => {
    const receiver = new Receiver(SECRET)
    receiver.failWith.push(503, 500)
    const id = await webhook(await receiver.listen())
    try {
      const [a] = await raise('flaky-1', 'overheat')
      await receiver.waitForCount(1)
      assert.equal(receiver.received[0].event.data.alert.id, a.id)
      const d = await waitFor(async () => {
        const [x] = (await p.req('GET', `/api/v1/webhooks/${id}/deliveries`)).body.items
        return x.status === 'delivered' && x
      })
      assert.deepEqual(
        d.attempts.map((x: { statusCode: number; error: string | null }) => [x.statusCode, x.error]),
        [
          [503, 'answered HTTP 503'],
          [500, 'answered HTTP 500'],
          [200, null],
        ],
      )
    } finally {
      await p.req('DELETE', `/api/v1/webhooks/${id}`)
      await receiver.close()
    }
  })
})
