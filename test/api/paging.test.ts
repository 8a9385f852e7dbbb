import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

/** One page as the client sees it: the body, and the cursor of the next page from each place it is given. */
interface Page {
  status: number
  body: any
  header: string | null
  link: string | null
}

describe('paging: keyset cursors on telemetry, quarantine and devices', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const get = async (path: string): Promise<Page> => {
    const r = await p.req('GET', path)
    return {
      status: r.status,
      body: r.body,
      header: r.headers.get('iotcore-next-cursor'),
      link: r.headers.get('link'),
    }
  }

  /** Follows the next cursor from the first page to the last; checks each page says it the same three ways. */
  async function allPages(path: string, fromBody: boolean): Promise<Page[]> {
    const pages: Page[] = []
    let url = path
    for (;;) {
      const page = await get(url)
      assert.equal(page.status, 200, JSON.stringify(page.body))
      pages.push(page)
      if (fromBody) assert.equal(page.body.next ?? null, page.header)
      if (page.header === null) {
        assert.equal(page.link, null)
        return pages
      }
      assert.match(page.header, /^[A-Za-z0-9_-]+$/, 'base64url')
      const next = new URL(path, 'http://x')
      next.searchParams.set('cursor', page.header)
      assert.equal(page.link, `<${next.pathname}${next.search}>; rel="next"`)
      url = next.pathname + next.search
      assert.ok(pages.length < 100, 'the cursor must end')
    }
  }

  test('10,000 readings sharing one timestamp are all reachable in pages of 1,000, each once, in both orders, per key', async () => {
    const dev = await p.createDevice('same-ts')
    // Neither ts nor msgId: the whole array is stamped with one receive time (issue 13, item 6). Key b is on
    // every other reading, so it runs out halfway through a's pages.
    const readings = Array.from({ length: 10_000 }, (_, i) => (i % 2 === 0 ? { a: i, b: i } : { a: i }))
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify(readings),
    })
    assert.equal(r.status, 202)
    const stored = await waitFor(async () => {
      const x = await p.app.store.pool.query(
        'SELECT count(*)::int AS n, count(DISTINCT ts)::int AS ts FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
        [dev.id],
      )
      return x.rows[0].n === 10_000 && x.rows[0]
    })
    assert.equal(stored.ts, 1)

    const seen: Record<string, { a: number[]; b: number[] }> = {}
    for (const order of ['asc', 'desc']) {
      const pages = await allPages(
        `/api/v1/devices/${dev.id}/telemetry?keys=a,b&limit=1000&order=${order}`,
        false,
      )
      assert.equal(pages.length, 10)
      for (const page of pages) assert.deepEqual(Object.keys(page.body), ['a', 'b'])
      assert.deepEqual(
        pages.map((x) => x.body.a.length),
        Array(10).fill(1000),
      )
      assert.deepEqual(
        pages.map((x) => x.body.b.length),
        [...Array(5).fill(1000), ...Array(5).fill(0)],
      )
      const a = pages.flatMap((x) => x.body.a.map((pt: { value: number }) => pt.value))
      const b = pages.flatMap((x) => x.body.b.map((pt: { value: number }) => pt.value))
      assert.equal(new Set(a).size, 10_000, `${order}: every a once`)
      assert.deepEqual(
        [...a].sort((x, y) => x - y),
        readings.map((_, i) => i),
      )
      assert.equal(new Set(b).size, 5_000, `${order}: every b once`)
      assert.ok(b.every((v) => v % 2 === 0))
      seen[order] = { a, b }
    }
    // Ties are in msgId order, reversed by order=desc: the two walks are mirror images.
    assert.deepEqual(seen.desc.a, [...seen.asc.a].reverse())
    assert.deepEqual(seen.desc.b, [...seen.asc.b].reverse())
  })

  test('the last page has no cursor; a range that fits in one page has none at all', async () => {
    const dev = await p.createDevice('short')
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify([1, 2, 3].map((i) => ({ msgId: `m${i}`, ts: 1_795_420_800_000 + i, v: i }))),
    })
    assert.equal(r.status, 202)
    await waitFor(async () => (await get(`/api/v1/devices/${dev.id}/telemetry?keys=v`)).body.v.length === 3)
    const exact = await get(`/api/v1/devices/${dev.id}/telemetry?keys=v&limit=3`)
    assert.equal(exact.header, null)
    assert.equal(exact.link, null)
    const two = await allPages(`/api/v1/devices/${dev.id}/telemetry?keys=v&limit=2&order=asc`, false)
    assert.deepEqual(
      two.map((x) => x.body.v.map((pt: { value: number }) => pt.value)),
      [[1, 2], [3]],
    )
  })

  test('a cursor continues only the query it came from; a damaged one is 400, never a 500', async () => {
    const dev = await p.createDevice('cursor-misuse')
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify([1, 2, 3].map((i) => ({ msgId: `m${i}`, ts: 1_795_420_800_000 + i, v: i, w: i }))),
    })
    assert.equal(r.status, 202)
    await waitFor(async () => (await get(`/api/v1/devices/${dev.id}/telemetry?keys=v`)).body.v.length === 3)
    const first = await get(`/api/v1/devices/${dev.id}/telemetry?keys=v,w&limit=1`)
    const cursor = first.header
    assert.ok(cursor)
    const forged = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
    const bad = [
      `keys=v&limit=1&cursor=${cursor}`,
      `keys=v,w&limit=1&order=asc&cursor=${cursor}`,
      `keys=v,w&limit=1&from=0&cursor=${cursor}`,
      `keys=v,w&agg=count&interval=1m&cursor=${cursor}`,
      'keys=v,w&cursor=nonsense',
      'keys=v,w&cursor=',
      `keys=v,w&cursor=${forged({ q: 'x', p: [['1\u0000', 'a']] })}`,
      `keys=v,w&cursor=${cursor.slice(0, -3)}`,
    ]
    for (const q of bad) {
      const x = await get(`/api/v1/devices/${dev.id}/telemetry?${q}`)
      assert.equal(x.status, 400, q)
      assert.equal(x.body.code, 'IOT_ERR_BAD_REQUEST', q)
      assert.match(x.body.message, /cursor/, q)
    }
    const other = await get(`/api/v1/devices/${dev.id}/telemetry?keys=v,w&limit=1&cursor=${cursor}`)
    assert.equal(other.status, 200)
    assert.deepEqual(other.body, {
      v: [{ ts: 1_795_420_800_002, value: 2 }],
      w: [{ ts: 1_795_420_800_002, value: 2 }],
    })
  })

  test('the quarantine pages by cursor: 2,500 rows received at one instant, each once, in both orders and under each filter', async () => {
    const dev = await p.createDevice('q-paging')
    // One good reading keeps the payload accepted; each bad one becomes a quarantine row of its own.
    const body = [{ ok: 1 }, ...Array.from({ length: 2_500 }, (_, i) => ({ lat: 999, n: i }))]
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify(body),
    })
    assert.equal(r.status, 202)
    const stored = await waitFor(async () => {
      const x = await p.app.store.pool.query(
        `SELECT count(*)::int AS n, count(DISTINCT received_at)::int AS at, array_agg(id::text) AS ids
         FROM quarantine WHERE device_id = $1`,
        [dev.id],
      )
      return x.rows[0].n === 2_500 && x.rows[0]
    })
    assert.equal(stored.at, 1)
    const all = new Set<string>(stored.ids)

    const ids: Record<string, string[]> = {}
    for (const q of [`deviceId=${dev.id}`, 'reason=invalid_value', '']) {
      for (const order of ['', '&order=asc']) {
        const pages = await allPages(`/api/v1/quarantine?${q}&limit=1000${order}`, true)
        assert.deepEqual(
          pages.map((x) => x.body.items.length),
          [1000, 1000, 500],
          q + order,
        )
        const got = pages.flatMap((x) => x.body.items.map((i: { id: string }) => i.id))
        assert.equal(new Set(got).size, 2_500, `${q}${order}: each row once`)
        assert.ok(
          got.every((id) => all.has(id)),
          q + order,
        )
        ids[q + order] = got
      }
    }
    // Default: newest first (ties: highest id first); asc is its mirror.
    assert.deepEqual(ids[`deviceId=${dev.id}`], [...ids[`deviceId=${dev.id}&order=asc`]].reverse())
    assert.deepEqual(
      ids[`deviceId=${dev.id}`],
      [...all].sort((x, y) => Number(y) - Number(x)),
    )
  })

  test('the device list pages by cursor in creation order, both ways; offset is refused, not ignored', async () => {
    for (let i = 0; i < 25; i++) await p.createDevice(`fleet-${i}`)
    const inDb = (await p.app.store.pool.query('SELECT id FROM devices ORDER BY created_at, id')).rows.map(
      (x) => x.id,
    )
    assert.ok(inDb.length >= 25)
    const walk = async (order: string) =>
      (await allPages(`/api/v1/devices?limit=10${order}`, true)).flatMap((x) =>
        x.body.devices.map((d: { id: string }) => d.id),
      )
    assert.deepEqual(await walk(''), inDb)
    assert.deepEqual(await walk('&order=desc'), [...inDb].reverse())
    const off = await get('/api/v1/devices?limit=10&offset=10')
    assert.equal(off.status, 400)
    assert.match(off.body.message, /offset.*cursor/)
    const qoff = await get('/api/v1/quarantine?offset=10')
    assert.equal(qoff.status, 400)
    assert.match(qoff.body.message, /offset.*cursor/)
  })
})
