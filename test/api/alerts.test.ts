import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { SseClient } from '../helpers/alerts.js'
import { ADMIN_TOKEN, type Platform, startPlatform, waitFor } from '../helpers/index.js'

const run = promisify(execFile)
const raiseScript = new URL('../helpers/raise-alert.js', import.meta.url).pathname

describe('api: alerts and webhooks', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const raise = (deviceId: string, type: string) =>
    p.app.store.alerts.raise([{ subject: { kind: 'device', id: deviceId }, type, severity: 'major' }])

  test('GET /alerts filters and pages; ack and clear change the state once, a raise after a clear is a new alert', async () => {
    const [a] = await raise('api-1', 'stuck')
    await raise('api-1', 'stuck')
    await raise('api-2', 'stuck')
    const list = await p.req('GET', '/api/v1/alerts?deviceId=api-1&status=active')
    assert.equal(list.status, 200)
    assert.equal(list.body.items.length, 1)
    assert.deepEqual(
      { ...list.body.items[0], firstSeen: 0, lastSeen: 0 },
      {
        id: a.id,
        type: 'stuck',
        severity: 'major',
        deviceId: 'api-1',
        service: null,
        status: 'active',
        acknowledged: false,
        acknowledgedAt: null,
        firstSeen: 0,
        lastSeen: 0,
        clearedAt: null,
        count: 2,
        details: {},
      },
    )

    const acked = await p.req('POST', `/api/v1/alerts/${a.id}/ack`)
    assert.equal(acked.status, 200)
    assert.equal(acked.body.acknowledged, true)
    const cleared = await p.req('POST', `/api/v1/alerts/${a.id}/clear`)
    assert.equal(cleared.body.status, 'cleared')
    assert.equal((await p.req('POST', `/api/v1/alerts/${a.id}/clear`)).body.clearedAt, cleared.body.clearedAt)
    const [b] = await raise('api-1', 'stuck')
    assert.notEqual(b.id, a.id)
    const both = await p.req('GET', '/api/v1/alerts?deviceId=api-1&order=asc&limit=1')
    assert.deepEqual(
      both.body.items.map((x: { id: string }) => x.id),
      [a.id],
    )
    assert.ok(both.headers.get('iotcore-next-cursor'))
    const second = await p.req(
      'GET',
      `/api/v1/alerts?deviceId=api-1&order=asc&limit=1&cursor=${both.body.next}`,
    )
    assert.deepEqual(
      second.body.items.map((x: { id: string }) => x.id),
      [b.id],
    )
    const unacked = await p.req('GET', '/api/v1/alerts?type=stuck&acknowledged=false&severity=major,critical')
    assert.deepEqual(unacked.body.items.map((x: { deviceId: string }) => x.deviceId).sort(), [
      'api-1',
      'api-2',
    ])
  })

  test('unknown alerts and webhooks are 404 with their codes; bad filters and URLs are 400', async () => {
    for (const path of ['/api/v1/alerts/999999/ack', '/api/v1/alerts/abc/clear']) {
      const r = await p.req('POST', path)
      assert.equal(r.status, 404)
      assert.equal(r.body.code, 'IOT_ERR_ALERT_NOT_FOUND')
    }
    assert.equal((await p.req('GET', '/api/v1/alerts/123456')).body.code, 'IOT_ERR_ALERT_NOT_FOUND')
    for (const r of [
      await p.req('DELETE', '/api/v1/webhooks/999999'),
      await p.req('POST', '/api/v1/webhooks/x/test'),
      await p.req('GET', '/api/v1/webhooks/999999/deliveries'),
    ]) {
      assert.equal(r.status, 404)
      assert.equal(r.body.code, 'IOT_ERR_WEBHOOK_NOT_FOUND')
    }
    assert.equal((await p.req('GET', '/api/v1/alerts?severity=bad')).body.code, 'IOT_ERR_BAD_REQUEST')
    assert.equal((await p.req('GET', '/api/v1/alerts?offset=10')).status, 400)
    const ftp = await p.req('POST', '/api/v1/webhooks', { url: 'ftp://example.com/x' })
    assert.equal(ftp.status, 400)
    assert.match(ftp.body.message, /http or https/)
    assert.equal((await p.req('POST', '/api/v1/webhooks', { url: 'not a url' })).status, 400)
    assert.equal(
      (await p.req('POST', '/api/v1/webhooks', { url: 'http://x/', events: ['nope'] })).status,
      400,
    )
    assert.equal((await p.req('GET', '/api/v1/alerts', undefined, 'wrong-token-0123456789')).status, 401)
  })

  test('webhooks: created with a generated secret shown once, listed without it, deleted', async () => {
    const created = await p.req('POST', '/api/v1/webhooks', {
      url: 'http://127.0.0.1:9/in',
      events: ['alert.opened'],
    })
    assert.equal(created.status, 201)
    assert.match(created.body.secret, /^whsec_/)
    assert.deepEqual(created.body.events, ['alert.opened'])
    const listed = await p.req('GET', '/api/v1/webhooks')
    const mine = listed.body.webhooks.find((w: { id: string }) => w.id === created.body.id)
    assert.equal(mine.url, 'http://127.0.0.1:9/in')
    assert.equal(mine.secret, undefined)
    const rotated = await p.req('POST', `/api/v1/webhooks/${created.body.id}/secret`, { keepPreviousFor: 60 })
    assert.equal(rotated.status, 200)
    assert.notEqual(rotated.body.secret, created.body.secret)
    assert.notEqual(rotated.body.previousSecretExpiresAt, null)
    const fired = await p.req('POST', `/api/v1/webhooks/${created.body.id}/test`)
    assert.equal(fired.status, 202)
    const deliveries = await p.req('GET', `/api/v1/webhooks/${created.body.id}/deliveries`)
    assert.equal(deliveries.status, 200)
    assert.equal(deliveries.body.items[0].id, fired.body.deliveryId)
    assert.equal(deliveries.body.items[0].eventType, 'webhook.test')
    assert.equal((await p.req('DELETE', `/api/v1/webhooks/${created.body.id}`)).status, 204)
    assert.equal((await p.req('GET', `/api/v1/webhooks/${created.body.id}`)).status, 404)
  })

  test('the SSE stream delivers an alert opened by another process, and a reconnect with Last-Event-ID what it missed', async () => {
    const stream = new SseClient()
    await stream.connect(`${p.api}/alerts/stream`, ADMIN_TOKEN)
    try {
      await run(process.execPath, [raiseScript, p.databaseUrl, 'sse-device', 'door_open'])
      const opened = await waitFor(() =>
        stream.events.find((e) => e.event === 'alert.opened' && e.data.data.alert.deviceId === 'sse-device'),
      )
      assert.equal(opened.data.type, 'alert.opened')
      assert.match(opened.data.id, /^[0-9a-f-]{36}$/)
      assert.equal(opened.data.data.alert.type, 'door_open')
      assert.ok(opened.id)

      // Two more changes while a second client is away; it comes back with the id of the last event it saw.
      const id = opened.data.data.alert.id
      await p.req('POST', `/api/v1/alerts/${id}/ack`)
      await p.req('POST', `/api/v1/alerts/${id}/clear`)
      await waitFor(() =>
        stream.events.some((e) => e.event === 'alert.cleared' && e.data.data.alert.id === id),
      )
      const back = new SseClient()
      await back.connect(`${p.api}/alerts/stream`, ADMIN_TOKEN, opened.id)
      try {
        await waitFor(() => back.events.length >= 2)
        assert.deepEqual(
          back.events.map((e) => e.event),
          ['alert.acknowledged', 'alert.cleared'],
        )
      } finally {
        await back.close()
      }
    } finally {
      await stream.close()
    }
  })

  test('the OpenAPI document lists the alerts and webhooks routes', async () => {
    const doc = await (await fetch(`${p.base}/docs/json`)).json()
    assert.ok(doc.paths['/api/v1/alerts'].get)
    assert.ok(doc.paths['/api/v1/alerts/stream'].get)
    assert.ok(doc.paths['/api/v1/alerts/{id}/ack'].post)
    assert.ok(doc.paths['/api/v1/webhooks'].post)
    assert.ok(doc.paths['/api/v1/webhooks/{id}/deliveries'].get)
    assert.deepEqual(doc.paths['/api/v1/webhooks/{id}/test'].post.tags, ['webhooks'])
  })

  test('a platform stops while a stream is open', async () => {
    const other = await startPlatform()
    const stream = new SseClient()
    await stream.connect(`${other.api}/alerts/stream`, ADMIN_TOKEN)
    await waitFor(() => other.app.alertStream!.size === 1)
    await other.stop()
    await stream.close()
  })
})
