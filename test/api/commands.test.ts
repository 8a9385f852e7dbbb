import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform } from '../helpers/index.js'

describe('API: device commands', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const post = (id: string, body: unknown) => p.req('POST', `/api/v1/devices/${id}/commands`, body)

  test('POST queues a command: 201 with the command, its params and an expiry from its ttl (a day by default)', async () => {
    const dev = await p.createDevice('api-cmd')
    const r = await post(dev.id, { name: 'setdigout 1', params: { pin: 1, on: true }, ttl: 60 })
    assert.equal(r.status, 201)
    assert.match(r.body.id, /^\d+$/)
    assert.equal(r.body.deviceId, dev.id)
    assert.equal(r.body.name, 'setdigout 1')
    assert.deepEqual(r.body.params, { pin: 1, on: true })
    assert.equal(r.body.status, 'queued')
    assert.equal(r.body.attempts, 0)
    assert.equal(r.body.result, null)
    assert.equal(r.body.sentAt, null)
    assert.equal(Date.parse(r.body.expiresAt) - Date.parse(r.body.createdAt), 60_000)

    const plain = await post(dev.id, { name: 'getinfo' })
    assert.equal(plain.status, 201)
    assert.deepEqual(plain.body.params, {})
    assert.equal(Date.parse(plain.body.expiresAt) - Date.parse(plain.body.createdAt), 86_400_000)

    const one = await p.req('GET', `/api/v1/devices/${dev.id}/commands/${r.body.id}`)
    assert.equal(one.status, 200)
    assert.deepEqual(one.body, r.body)
  })

  test("a command to an unknown device is a 404; to a retired one a 409; reading another device's command a 404", async () => {
    const missing = await post('no-such-device', { name: 'reboot' })
    assert.equal(missing.status, 404)
    assert.equal(missing.body.code, 'IOT_ERR_DEVICE_NOT_FOUND')
    for (const path of [
      '/api/v1/devices/no-such-device/commands',
      '/api/v1/devices/no-such-device/commands/1',
    ]) {
      const r = await p.req('GET', path)
      assert.equal(r.status, 404, path)
      assert.equal(r.body.code, 'IOT_ERR_DEVICE_NOT_FOUND', path)
    }

    const a = await p.createDevice('cmd-a')
    const b = await p.createDevice('cmd-b')
    const cmd = (await post(a.id, { name: 'mine' })).body
    for (const cid of [cmd.id, '0', '99999999999', 'abc']) {
      const r = await p.req('GET', `/api/v1/devices/${b.id}/commands/${cid}`)
      assert.equal(r.status, 404, cid)
      assert.equal(r.body.code, 'IOT_ERR_COMMAND_NOT_FOUND', cid)
    }

    assert.equal((await p.req('DELETE', `/api/v1/devices/${b.id}`)).status, 204)
    const retired = await post(b.id, { name: 'too late' })
    assert.equal(retired.status, 409)
    assert.equal(retired.body.code, 'IOT_ERR_DEVICE_RETIRED')
    // Its history stays readable.
    assert.equal((await p.req('GET', `/api/v1/devices/${b.id}/commands`)).status, 200)
  })

  test('bad commands are a 400 naming what is wrong', async () => {
    const dev = await p.createDevice('cmd-bad')
    const cases: Array<[unknown, string, RegExp]> = [
      [{}, 'IOT_ERR_BAD_REQUEST', /name/],
      [{ name: '' }, 'IOT_ERR_BAD_REQUEST', /name/],
      [{ name: 'x'.repeat(513) }, 'IOT_ERR_BAD_REQUEST', /name/],
      [{ name: 'a', ttl: 0 }, 'IOT_ERR_BAD_REQUEST', /ttl/],
      [{ name: 'a', ttl: 30 * 86_400 + 1 }, 'IOT_ERR_BAD_REQUEST', /ttl/],
      [{ name: 'a', ttl: 1.5 }, 'IOT_ERR_BAD_REQUEST', /ttl/],
      [{ name: 'a', params: [1, 2] }, 'IOT_ERR_BAD_REQUEST', /params/],
      [{ name: 'a\u0000b' }, 'IOT_ERR_UNSTORABLE_TEXT', /name/],
      [{ name: 'a', params: { k: 'v\u0000' } }, 'IOT_ERR_UNSTORABLE_TEXT', /params\.k/],
    ]
    let deep: unknown = 1
    for (let i = 0; i < 40; i++) deep = { d: deep }
    cases.push([{ name: 'a', params: deep }, 'IOT_ERR_BAD_REQUEST', /params nest deeper than 32/])
    for (const [body, code, message] of cases) {
      const r = await post(dev.id, body)
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80))
      assert.equal(r.body.code, code, JSON.stringify(body).slice(0, 80))
      assert.match(r.body.message, message)
    }
    const list = await p.req('GET', `/api/v1/devices/${dev.id}/commands`)
    assert.deepEqual(list.body.items, [])
  })

  test("GET lists a device's commands newest first, a page at a time by cursor, of one status or all", async () => {
    const dev = await p.createDevice('cmd-list')
    const other = await p.createDevice('cmd-list-other')
    await post(other.id, { name: 'not listed' })
    const ids: string[] = []
    for (let i = 0; i < 5; i++) ids.push((await post(dev.id, { name: `c${i}` })).body.id)

    const seen: string[] = []
    let path = `/api/v1/devices/${dev.id}/commands?limit=2`
    for (;;) {
      const r = await p.req('GET', path)
      assert.equal(r.status, 200)
      seen.push(...r.body.items.map((c: any) => c.id))
      if (r.body.next === null) {
        assert.equal(r.headers.get('iotcore-next-cursor'), null)
        break
      }
      assert.equal(r.headers.get('iotcore-next-cursor'), r.body.next)
      path = `/api/v1/devices/${dev.id}/commands?limit=2&cursor=${r.body.next}`
    }
    assert.deepEqual(seen, [...ids].reverse())

    const asc = await p.req('GET', `/api/v1/devices/${dev.id}/commands?order=asc`)
    assert.deepEqual(
      asc.body.items.map((c: any) => c.id),
      ids,
    )

    await p.app.store.pool.query(`UPDATE commands SET status = 'expired' WHERE id = $1`, [ids[1]])
    const expired = await p.req('GET', `/api/v1/devices/${dev.id}/commands?status=expired`)
    assert.deepEqual(
      expired.body.items.map((c: any) => c.id),
      [ids[1]],
    )
    const bad = await p.req('GET', `/api/v1/devices/${dev.id}/commands?status=lost`)
    assert.equal(bad.status, 400)

    // A cursor belongs to its query; an offset is refused.
    const first = await p.req('GET', `/api/v1/devices/${dev.id}/commands?limit=1`)
    const wrong = await p.req(
      'GET',
      `/api/v1/devices/${dev.id}/commands?limit=1&order=asc&cursor=${first.body.next}`,
    )
    assert.equal(wrong.status, 400)
    assert.match(wrong.body.message, /another query/)
    const offset = await p.req('GET', `/api/v1/devices/${dev.id}/commands?offset=2`)
    assert.equal(offset.status, 400)
  })

  test('the OpenAPI document shows the command routes', async () => {
    const doc = await (await fetch(p.base + '/docs/json')).json()
    assert.ok(doc.paths['/api/v1/devices/{id}/commands'].post)
    assert.ok(doc.paths['/api/v1/devices/{id}/commands'].get)
    assert.ok(doc.paths['/api/v1/devices/{id}/commands/{cid}'].get)
    const schemas = Object.values(doc.components.schemas) as Array<{ title?: string }>
    assert.ok(schemas.some((x) => x.title === 'Command'))
  })
})
