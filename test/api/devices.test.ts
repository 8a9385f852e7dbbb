import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'

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

  test('PATCH renames a device or replaces its attributes, leaving the rest; its token keeps working', async () => {
    const dev = await p.createDevice('van-1', { attributes: { fleet: 'north', depot: 3 } })
    const renamed = await p.req('PATCH', `/api/v1/devices/${dev.id}`, { name: 'van-one' })
    assert.equal(renamed.status, 200)
    assert.deepEqual([renamed.body.name, renamed.body.attributes], ['van-one', { fleet: 'north', depot: 3 }])
    const moved = await p.req('PATCH', `/api/v1/devices/${dev.id}`, {
      attributes: { fleet: 'south', resend: true },
    })
    assert.deepEqual([moved.body.name, moved.body.attributes], ['van-one', { fleet: 'south', resend: true }])
    assert.deepEqual((await p.req('GET', `/api/v1/devices/${dev.id}`)).body.attributes, {
      fleet: 'south',
      resend: true,
    })
    assert.equal((await p.postTelemetry(dev, { msgId: 'p1', speed: 1 })).status, 202)
  })

  test("a device moved into a rule's group by PATCH is judged by that rule from its next reading", async () => {
    const rule = await p.req('POST', '/api/v1/rules', {
      name: 'patched-group-slow',
      attributes: { fleet: 'patched' },
      condition: { type: 'range', key: 'speed', max: 10 },
      trigger: { type: 'simple' },
    })
    assert.equal(rule.status, 201)
    const dev = await p.createDevice('van-2', { attributes: { fleet: 'other' } })
    const T = Date.now() - 60_000
    const speeds = async (n: number) =>
      waitFor(async () => {
        const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed&order=asc`)
        return r.body.speed.length === n && r.body.speed
      })
    assert.equal((await p.postTelemetry(dev, { msgId: 'a', ts: T, speed: 50 })).status, 202)
    await speeds(1)
    await p.req('PATCH', `/api/v1/devices/${dev.id}`, { attributes: { fleet: 'patched' } })
    assert.equal((await p.postTelemetry(dev, { msgId: 'b', ts: T + 1000, speed: 50 })).status, 202)
    assert.deepEqual(
      (await speeds(2)).map((x: { flags?: string[] }) => x.flags ?? []),
      [[], ['rule:patched-group-slow']],
    )
  })

  test('PATCH of an unknown device is a 404; an empty, unknown-field or unstorable body is a 400', async () => {
    const missing = await p.req('PATCH', '/api/v1/devices/nope', { name: 'x' })
    assert.deepEqual([missing.status, missing.body.code], [404, 'IOT_ERR_DEVICE_NOT_FOUND'])
    const dev = await p.createDevice('patchy')
    for (const body of [{}, { imei: '1' }, { name: '' }, { attributes: { note: 'a\u0000b' } }]) {
      const r = await p.req('PATCH', `/api/v1/devices/${dev.id}`, body)
      assert.equal(r.status, 400, JSON.stringify(body))
      assert.match(r.body.message, /\w/)
    }
    assert.equal((await p.req('GET', `/api/v1/devices/${dev.id}`)).body.name, 'patchy')
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

  /** Telemetry rows carry a device's integer key: each device's, looked up while it exists. */
  const pks = new Map<string, string>()

  /** Rows of a device in `table`, counted in the database. */
  async function rows(table: 'telemetry' | 'devices' | 'mqtt_sessions', deviceId: string): Promise<number> {
    const q = (sql: string, value: string) => p.app.store.pool.query(sql, [value])
    if (table === 'telemetry' && !pks.has(deviceId))
      pks.set(deviceId, (await q('SELECT pk FROM devices WHERE id = $1', deviceId)).rows[0].pk)
    const [column, key] =
      table === 'telemetry'
        ? ['device_pk', pks.get(deviceId)!]
        : [table === 'devices' ? 'id' : 'device_id', deviceId]
    const r = await q(`SELECT count(*)::int AS n FROM ${table} WHERE ${column} = $1`, key)
    return r.rows[0].n
  }

  /** A device with one reading stored through HTTP ingest. */
  async function withReading(name: string): Promise<Device> {
    const d = await p.createDevice(name)
    assert.equal((await p.postTelemetry(d, { msgId: 'r1', ts: 1_000, speed: 42 })).status, 202)
    await waitFor(async () => (await rows('telemetry', d.id)) === 1, 20_000, 'the reading stored')
    return d
  }

  const listed = async (query: string) =>
    ((await p.req('GET', `/api/v1/devices?limit=10000${query}`)).body.devices as Array<{ id: string }>).map(
      (x) => x.id,
    )

  test('DELETE without data retires the device: hidden from the list, credentials revoked, telemetry still readable', async () => {
    const d = await withReading('retire-me')
    const other = await p.createDevice('stays')
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}`)).status, 204)

    const one = await p.req('GET', `/api/v1/devices/${d.id}`)
    assert.equal(one.status, 200)
    assert.ok(!Number.isNaN(Date.parse(one.body.retiredAt)), `retiredAt: ${one.body.retiredAt}`)
    assert.ok(!(await listed('')).includes(d.id), 'the default list leaves it out')
    assert.ok((await listed('')).includes(other.id))
    assert.ok((await listed('&retired=include')).includes(d.id))
    assert.ok((await listed('&retired=include')).includes(other.id))
    assert.deepEqual(await listed('&retired=only'), [d.id])

    const points = await p.req('GET', `/api/v1/devices/${d.id}/telemetry?keys=speed`)
    assert.deepEqual(points.body.speed, [{ ts: 1_000, value: 42 }])
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}/latest`)).body.values.speed.value, 42)

    assert.equal((await p.postTelemetry(d, { msgId: 'r2', speed: 1 })).status, 401)
    const rotate = await p.req('POST', `/api/v1/devices/${d.id}/token`)
    assert.equal(rotate.status, 409)
    assert.equal(rotate.body.code, 'IOT_ERR_DEVICE_RETIRED')
    assert.equal(await p.app.store.devices.credential(d.id), undefined)

    // Retiring again changes nothing; the telemetry is still there.
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}?data=keep`)).status, 204)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}`)).body.retiredAt, one.body.retiredAt)
    assert.equal(await rows('telemetry', d.id), 1)
  })

  test('a second DELETE with data=delete removes a retired device and its telemetry', async () => {
    const d = await withReading('retire-then-delete')
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}?data=keep`)).status, 204)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}?data=delete`)).status, 204)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}`)).status, 404)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}/telemetry?keys=speed`)).status, 404)
    assert.ok(!(await listed('&retired=include')).includes(d.id))
    assert.equal(await rows('devices', d.id), 0)
    assert.equal(await rows('telemetry', d.id), 0)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}?data=delete`)).status, 404)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}`)).status, 404)
  })

  test('DELETE with data=delete removes a live device, its telemetry and its MQTT sessions, and its token stops working', async () => {
    const d = await withReading('gone')
    await p.app.store.sessions.save(`${d.id}/c1`, d.id, { [`devices/${d.id}/commands`]: 1 }, 3600)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${d.id}?data=delete`)).status, 204)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}`)).status, 404)
    assert.equal(await rows('telemetry', d.id), 0)
    assert.equal(await rows('mqtt_sessions', d.id), 0)
    assert.equal((await p.postTelemetry(d, '{"x":1}')).status, 401)
  })

  test('a retired device frees its imei for a new device; a live one keeps it', async () => {
    const a = await p.createDevice('tracker-old', { imei: '867530900112233' })
    const taken = await p.req('POST', '/api/v1/devices', { name: 'b', imei: '867530900112233' })
    assert.equal(taken.status, 409)
    assert.equal((await p.req('DELETE', `/api/v1/devices/${a.id}`)).status, 204)
    const b = await p.req('POST', '/api/v1/devices', { name: 'tracker-new', imei: '867530900112233' })
    assert.equal(b.status, 201)
    assert.equal((await p.req('GET', `/api/v1/devices/${a.id}`)).body.imei, '867530900112233')
    assert.equal(p.app.credentials?.byImeiLookup('867530900112233')?.id, b.body.id)
  })

  test('DELETE with an unknown data value is a 400 naming the choices', async () => {
    const d = await p.createDevice('kept')
    const r = await p.req('DELETE', `/api/v1/devices/${d.id}?data=archive`)
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
    assert.match(r.body.message, /data/)
    assert.equal((await p.req('GET', `/api/v1/devices/${d.id}`)).body.retiredAt, null)
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
