import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { ADMIN_TOKEN, type Platform, startPlatform } from '../helpers/index.js'
import { openSse } from '../helpers/sse.js'

describe("the console's API", () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({
      IOTCORE_MAP_TILES: 'https://{s}.tiles.example.org/{z}/{x}/{y}.png',
      IOTCORE_MAP_ATTRIBUTION: '© example',
      IOTCORE_OFFLINE_AFTER: '120',
    })
  })
  after(() => p?.stop())

  test('GET /console tells the listeners as bound, the map tiles, and which features this build has', async () => {
    const r = await p.req('GET', '/api/v1/console')
    assert.equal(r.status, 200)
    assert.equal(r.body.offlineAfterSeconds, 120)
    assert.deepEqual(r.body.map, {
      tiles: 'https://{s}.tiles.example.org/{z}/{x}/{y}.png',
      attribution: '© example',
    })
    assert.deepEqual(r.body.listeners, {
      http: p.httpPort,
      mqtt: p.mqttPort,
      mqttWebSocket: '/mqtt',
      teltonika: null,
      osmand: null,
      jsonl: null,
      signal: null,
    })
    // The alerts page is offered exactly when the organizer's alerts API is served.
    const alerts = await p.req('GET', '/api/v1/alerts')
    assert.deepEqual(r.body.features, { alerts: alerts.status === 200 })
    assert.ok(Math.abs(r.body.now - Date.now()) < 60_000)
    assert.equal((await p.req('GET', '/api/v1/console', undefined, 'wrong-token-0123456789')).status, 401)
  })

  test('GET /fleet pages the live devices with their latest values, compressed when asked', async () => {
    const a = await p.createDevice('fleet-a')
    const b = await p.createDevice('fleet-b')
    const gone = await p.createDevice('fleet-gone')
    // Enough of them for an answer past the compression threshold (1 KiB).
    await Promise.all(Array.from({ length: 12 }, (_, i) => p.createDevice(`fleet-more-${i}`)))
    assert.equal(
      (await p.postTelemetry(a, { ts: 1_700_000_000_000, msgId: 'x', speed: 12, lat: 1, lon: 2 })).status,
      202,
    )
    assert.equal((await p.req('DELETE', `/api/v1/devices/${gone.id}`)).status, 204)
    await waitLatest(p, a.id, 'speed')
    const first = await p.req('GET', '/api/v1/fleet?limit=1')
    assert.equal(first.status, 200)
    assert.equal(first.body.devices.length, 1)
    assert.ok(first.body.next)
    const all = await p.req('GET', '/api/v1/fleet?limit=100')
    const byId = new Map(all.body.devices.map((d: any) => [d.id, d]))
    assert.ok(byId.has(a.id) && byId.has(b.id))
    assert.ok(!byId.has(gone.id), 'a retired device is not in the fleet')
    assert.deepEqual((byId.get(a.id) as any).latest.speed, { ts: 1_700_000_000_000, value: 12 })
    const second = await p.req('GET', `/api/v1/fleet?limit=100&cursor=${encodeURIComponent(first.body.next)}`)
    assert.equal(second.body.devices.length, all.body.devices.length - 1)
    const br = await fetch(`${p.api}/fleet?limit=100`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'accept-encoding': 'br' },
    })
    // fetch decodes it; the header says it came compressed.
    assert.equal(br.headers.get('content-encoding'), 'br')
    assert.equal((await br.json()).devices.length, all.body.devices.length)
  })

  test('GET /devices/:id/series buckets every key in aligned columns of avg, min and max', async () => {
    const d = await p.createDevice('series')
    const t0 = Date.UTC(2026, 0, 1)
    const readings = [
      { ts: t0, msgId: '1', speed: 10, rpm: 1000 },
      { ts: t0 + 20_000, msgId: '2', speed: 30 },
      { ts: t0 + 60_000, msgId: '3', speed: 'n/a', rpm: 3000 },
      { ts: t0 + 130_000, msgId: '4', note: 'no number' },
    ]
    assert.equal((await p.postTelemetry(d, readings)).status, 202)
    await waitLatest(p, d.id, 'note')
    const r = await p.req(
      'GET',
      `/api/v1/devices/${d.id}/series?keys=speed,rpm&from=${t0}&to=${t0 + 180_000}&interval=1m`,
    )
    assert.equal(r.status, 200)
    assert.deepEqual(r.body, {
      intervalMs: 60_000,
      sampled: false,
      from: t0,
      to: t0 + 180_000,
      // The third minute holds no number under either key: left out.
      ts: [t0, t0 + 60_000],
      keys: {
        speed: { avg: [20, null], min: [10, null], max: [30, null] },
        rpm: { avg: [1000, 3000], min: [1000, 3000], max: [1000, 3000] },
      },
    })
    // A sample: each bucket's first reading, for a chart to show at once.
    const s = await p.req(
      'GET',
      `/api/v1/devices/${d.id}/series?keys=speed,rpm&from=${t0}&to=${t0 + 180_000}&interval=1m&sample=true`,
    )
    assert.deepEqual(s.body, {
      intervalMs: 60_000,
      sampled: true,
      from: t0,
      to: t0 + 180_000,
      // The third minute's first reading has neither key as a number: nulls, and still a bucket.
      ts: [t0, t0 + 60_000, t0 + 120_000],
      keys: {
        speed: { avg: [10, null, null], min: [10, null, null], max: [10, null, null] },
        rpm: { avg: [1000, 3000, null], min: [1000, 3000, null], max: [1000, 3000, null] },
      },
    })
    // Without an interval: the smallest round one that gives at most `points` buckets.
    const week = await p.req(
      'GET',
      `/api/v1/devices/${d.id}/series?keys=speed&from=${t0}&to=${t0 + 604_800_000}&points=1000`,
    )
    assert.equal(week.body.intervalMs, 900_000)
    const bad = await p.req('GET', `/api/v1/devices/${d.id}/series?keys=a,b,c,d,e,f,g,h,i`)
    assert.equal(bad.status, 400)
    assert.equal(
      (await p.req('GET', '/api/v1/devices/nope/series?keys=a')).body.code,
      'IOT_ERR_DEVICE_NOT_FOUND',
    )
  })

  test('the stream sends what was stored, after the commit, to the streams that follow that device', async () => {
    const a = await p.createDevice('live-a')
    const b = await p.createDevice('live-b')
    const all = await openSse(`${p.api}/stream?topics=telemetry,status,quarantine`)
    const onlyA = await openSse(`${p.api}/stream?topics=telemetry&devices=${a.id}`)
    try {
      assert.equal(all.status, 200)
      await all.next('ready')
      await onlyA.next('ready')
      assert.equal((await p.postTelemetry(b, { msgId: 'b1', speed: 7 })).status, 202)
      assert.equal((await p.postTelemetry(a, { msgId: 'a1', speed: 42 })).status, 202)
      const seen = await all.next('telemetry', (d) => d.some((u: any) => u.id === a.id))
      const update = seen.data.find((u: any) => u.id === a.id)
      assert.equal(update.latest.speed.value, 42)
      // What the event says is in the database already.
      assert.equal((await p.req('GET', `/api/v1/devices/${a.id}/latest`)).body.values.speed.value, 42)
      await all.next('telemetry', (d) => d.some((u: any) => u.id === b.id))
      await onlyA.next('telemetry', (d) => d.some((u: any) => u.id === a.id))
      for (const e of onlyA.events.filter((x) => x.type === 'telemetry'))
        assert.deepEqual(
          e.data.map((u: any) => u.id),
          [a.id],
        )
      // The registry's changes and the quarantine come too.
      const c = await p.createDevice('live-c')
      assert.equal(
        (await all.next('status', (d) => d.some((x: any) => x.id === c.id))).data[0].device.name,
        'live-c',
      )
      assert.equal((await p.req('DELETE', `/api/v1/devices/${c.id}`)).status, 204)
      await all.next('status', (d) => d.some((x: any) => x.id === c.id && x.device === null))
      // HTTP ingest answers an invalid reading 400, and quarantines it.
      assert.equal((await p.postTelemetry(a, { msgId: 'bad', lat: 999, lon: 0 })).status, 400)
      assert.ok((await all.next('quarantine')).data.added >= 1)
    } finally {
      all.close()
      onlyA.close()
    }
  })

  test('the stream refuses an unknown topic and a missing token', async () => {
    const bad = await p.req('GET', '/api/v1/stream?topics=telemetry,weather')
    assert.equal(bad.status, 400)
    assert.match(bad.body.message, /weather/)
    assert.equal((await fetch(`${p.api}/stream`)).status, 401)
  })

  test('/ serves the console: index.html revalidated, hashed assets immutable and precompressed', async () => {
    const page = await fetch(`${p.base}/`)
    assert.equal(page.status, 200)
    assert.equal(page.headers.get('cache-control'), 'no-cache')
    const csp = page.headers.get('content-security-policy') ?? ''
    assert.match(csp, /script-src 'self'/)
    assert.match(csp, /img-src 'self' data: blob: https:\/\/\*\.tiles\.example\.org/)
    const html = await page.text()
    const js = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1]
    assert.ok(js, html)
    const asset = await fetch(p.base + js, { headers: { 'accept-encoding': 'br, gzip' } })
    assert.equal(asset.status, 200)
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable')
    assert.equal(asset.headers.get('content-encoding'), 'br')
    assert.match(asset.headers.get('vary') ?? '', /accept-encoding/i)
    assert.match(await asset.text(), /iotcore/)
    const gz = await fetch(p.base + js, { headers: { 'accept-encoding': 'gzip' } })
    assert.equal(gz.headers.get('content-encoding'), 'gzip')
    // Paths that are no file stay the API's 404.
    const missing = await fetch(`${p.base}/assets/nope.js`)
    assert.equal(missing.status, 404)
    assert.equal((await missing.json()).code, 'IOT_ERR_NOT_FOUND')
  })
})

async function waitLatest(p: Platform, id: string, key: string): Promise<void> {
  const { waitFor } = await import('../helpers/index.js')
  await waitFor(
    async () => (await p.req('GET', `/api/v1/devices/${id}/latest`)).body.values[key] !== undefined,
  )
}
