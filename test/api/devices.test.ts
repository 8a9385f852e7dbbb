import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform } from '../helpers/index.js'

describe('device registry', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  test('admin routes refuse a missing or wrong admin token with 401 and a code', async () => {
    const none = await fetch(p.api + '/devices')
    assert.equal(none.status, 401)
    assert.equal((await none.json()).code, 'IOT_ERR_UNAUTHORIZED')
    const wrong = await p.req('GET', '/api/v1/devices', undefined, 'nope-nope-nope-nope')
    assert.equal(wrong.status, 401)
  })

  test('create returns the token once; list and read show status without it', async () => {
    const c = await p.req('POST', '/api/v1/devices', {
      name: 'truck-7',
      imei: '356307042441013',
      attributes: { fleet: 'north' },
    })
    assert.equal(c.status, 201)
    assert.match(c.body.token, /^iot_/)
    assert.equal(c.body.name, 'truck-7')
    assert.equal(c.body.imei, '356307042441013')
    assert.equal(c.body.online, false)
    const one = await p.req('GET', `/api/v1/devices/${c.body.id}`)
    assert.equal(one.status, 200)
    assert.equal(one.body.token, undefined)
    assert.deepEqual(one.body.attributes, { fleet: 'north' })
    assert.equal(one.body.lastSeenAt, null)
    const list = await p.req('GET', '/api/v1/devices')
    assert.ok(list.body.devices.some((d: { id: string }) => d.id === c.body.id))
  })

  test('the token is stored only as a hash', async () => {
    const d = await p.createDevice('hashed')
    const stored = await p.app.store.devices.credential(d.id)
    assert.notEqual(stored?.tokenHash, d.token)
    assert.match(stored?.tokenHash ?? '', /^[0-9a-f]{64}$/)
  })

  test('a duplicate imei is a 409 conflict', async () => {
    await p.createDevice('a', { imei: '111222333' })
    const r = await p.req('POST', '/api/v1/devices', { name: 'b', imei: '111222333' })
    assert.equal(r.status, 409)
    assert.equal(r.body.code, 'IOT_ERR_DEVICE_CONFLICT')
  })

  test('bad bodies are 400 with a message', async () => {
    const r = await p.req('POST', '/api/v1/devices', { nom: 'x' })
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
    assert.ok(r.body.message.length > 0)
    const bad = await p.req('POST', '/api/v1/devices', '{not json')
    assert.equal(bad.status, 400)
  })

  test('attributes 100,000 levels deep are 400 with a message, and nested ones within the limit are kept', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000)
    const r = await p.req('POST', '/api/v1/devices', `{"name":"deep","attributes":{"a":${deep}}}`)
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
    assert.match(r.body.message, /attributes nest deeper than 32 levels/)
    const ok = await p.req('POST', '/api/v1/devices', { name: 'nested', attributes: { car: { make: 'x' } } })
    assert.equal(ok.status, 201)
    assert.deepEqual(ok.body.attributes, { car: { make: 'x' } })
  })

  test('unknown device: 404 with IOT_ERR_DEVICE_NOT_FOUND', async () => {
    const r = await p.req('GET', '/api/v1/devices/nope')
    assert.equal(r.status, 404)
    assert.equal(r.body.code, 'IOT_ERR_DEVICE_NOT_FOUND')
  })

  test('rotating the token makes the old one fail and the new one work', async () => {
    const d = await p.createDevice('rot')
    const send = (token: string) => p.postTelemetry({ id: d.id, token }, '{"x":1}')
    assert.equal((await send(d.token)).status, 202)
    const r = await p.req('POST', `/api/v1/devices/${d.id}/token`)
    assert.equal(r.status, 200)
    assert.notEqual(r.body.token, d.token)
    assert.equal((await send(d.token)).status, 401)
    assert.equal((await send(r.body.token)).status, 202)
  })

  test('delete removes the device, and its token stops working', async () => {
    const d = await p.createDevice('gone')
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}`)).status, 204)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}`)).status, 404)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}`)).status, 404)
    assert.equal((await p.postTelemetry(d, '{"x":1}')).status, 401)
  })

  test('the OpenAPI document lists the routes', async () => {
    const r = await fetch(p.base + '/docs/json')
    assert.equal(r.status, 200)
    const doc = await r.json()
    assert.ok(doc.paths['/api/v1/devices'])
    assert.ok(doc.paths['/api/v1/devices/{id}/telemetry'].get)
    assert.ok(doc.paths['/api/v1/devices/{id}/telemetry'].post)
  })
})
