import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Store, TelemetryBatch } from '../../src/store/index.js'
import { freshStore, keysetPages } from '../helpers/index.js'

const T0 = Date.parse('2026-03-02T10:00:00Z')
const MIN = 60_000

describe('store: telemetry queries', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
    await store.devices.create({ id: 'q', name: 'q', tokenHash: 'h-q' })
    await store.devices.create({ id: 'other', name: 'other', tokenHash: 'h-other' })
    const b = new TelemetryBatch()
    // One reading a minute for ten minutes: temp 0..9, a text temp at minute 4, no temp at minute 7.
    for (let i = 0; i < 10; i++) {
      const values = i === 7 ? { door: 'open' } : { temp: i === 4 ? 'n/a' : i }
      b.add('q', `m${i}`, T0 + i * MIN, T0 + i * MIN, values)
    }
    b.add('other', 'm0', T0, T0, { temp: 100 })
    await store.writeBatch(b, [])
  })
  after(() => store.stop())

  const range = { deviceId: 'q', key: 'temp', limit: 100, order: 'asc' as const }

  test('telemetry: only readings of this device that carry the key, in [from, to)', async () => {
    const all = (await store.queries.telemetry(range)).items
    assert.deepEqual(
      all.map((p) => p.ts),
      [0, 1, 2, 3, 4, 5, 6, 8, 9].map((i) => T0 + i * MIN),
    )
    assert.equal(all[4].value, 'n/a')
    const some = (await store.queries.telemetry({ ...range, from: T0 + 2 * MIN, to: T0 + 5 * MIN })).items
    assert.deepEqual(
      some.map((p) => p.value),
      [2, 3, 'n/a'],
    )
    const newest = (await store.queries.telemetry({ ...range, order: 'desc', limit: 2 })).items
    assert.deepEqual(
      newest.map((p) => p.value),
      [9, 8],
    )
  })

  test('aggregate: buckets aligned to the epoch; avg/min/max/sum use numbers only, count every reading', async () => {
    const q = { ...range, intervalMs: 5 * MIN }
    const avg = await store.queries.aggregate({ ...q, agg: 'avg' })
    // T0 is on a 5-minute boundary: minutes 0-4 hold 0,1,2,3 (and a text), 5-9 hold 5,6,8,9.
    assert.deepEqual(avg, [
      { ts: T0, value: 1.5 },
      { ts: T0 + 5 * MIN, value: 7 },
    ])
    const count = await store.queries.aggregate({ ...q, agg: 'count' })
    assert.deepEqual(
      count.map((p) => p.value),
      [5, 4],
    )
    const max = await store.queries.aggregate({ ...q, agg: 'max', order: 'desc' })
    assert.deepEqual(max[0], { ts: T0 + 5 * MIN, value: 9 })
    const shifted = await store.queries.aggregate({ ...q, agg: 'sum', from: T0 + 3 * MIN })
    assert.deepEqual(shifted, [
      { ts: T0, value: 3 },
      { ts: T0 + 5 * MIN, value: 28 },
    ])
  })

  test('aggregate leaves out buckets without a number under the key', async () => {
    const text = await store.queries.aggregate({
      ...range,
      intervalMs: MIN,
      agg: 'min',
      from: T0 + 4 * MIN,
      to: T0 + 6 * MIN,
    })
    assert.deepEqual(text, [{ ts: T0 + 5 * MIN, value: 5 }])
  })

  test('aggregate: buckets without a number are left out before limit, so they do not use it up', async () => {
    const first = await store.queries.aggregate({
      ...range,
      intervalMs: MIN,
      agg: 'max',
      from: T0 + 4 * MIN,
      limit: 1,
    })
    assert.deepEqual(first, [{ ts: T0 + 5 * MIN, value: 5 }])
  })

  test('someValueType: the JSON type of a value of the key in the range; undefined where the key is absent', async () => {
    const at = (from: number, to: number, key = 'temp') =>
      store.queries.someValueType({ deviceId: 'q', key, from, to })
    assert.equal(await at(T0 + 4 * MIN, T0 + 5 * MIN), 'string')
    assert.equal(await at(T0, T0 + MIN), 'number')
    assert.equal(await at(T0 + 7 * MIN, T0 + 8 * MIN), undefined)
    assert.equal(await at(T0 + 7 * MIN, T0 + 8 * MIN, 'door'), 'string')
  })

  test('telemetry pages by (ts, msgId): rows sharing one ts are each returned once, both ways', async () => {
    const s = await freshStore()
    try {
      await s.devices.create({ id: 't', name: 't', tokenHash: 'h-t' })
      const b = new TelemetryBatch()
      // 25 readings on one ts between two others; msgIds in an order unlike their insertion.
      for (let i = 0; i < 25; i++) b.add('t', `m${String((i * 7) % 25).padStart(2, '0')}`, T0, T0, { v: i })
      b.add('t', 'first', T0 - 1, T0, { v: -1 })
      b.add('t', 'last', T0 + 1, T0, { v: 99 })
      await s.writeBatch(b, [])
      const walk = async (order: 'asc' | 'desc') => {
        const query = { deviceId: 't', key: 'v', limit: 10, order }
        const pages = await keysetPages((after) => s.queries.telemetry({ ...query, after }))
        return pages.map((page) => page.map((p) => p.value as number))
      }
      const asc = await walk('asc')
      assert.deepEqual(
        asc.map((p) => p.length),
        [10, 10, 7],
      )
      const flat = asc.flat()
      assert.equal(new Set(flat).size, 27)
      assert.equal(flat[0], -1)
      assert.equal(flat[26], 99)
      assert.deepEqual((await walk('desc')).flat(), [...flat].reverse())
      // A range bound still applies on later pages.
      const bounded = await s.queries.telemetry({ deviceId: 't', key: 'v', limit: 30, order: 'asc', to: T0 })
      assert.deepEqual(
        bounded.items.map((p) => p.value),
        [-1],
      )
      assert.equal(bounded.next, null)
    } finally {
      await s.stop()
    }
  })

  test('latest: each key at its newest ts, kept when an older reading arrives later', async () => {
    const late = new TelemetryBatch()
    late.add('q', 'late', T0 - MIN, T0 + 20 * MIN, { temp: -1, humidity: 40 })
    await store.writeBatch(late, [])
    const l = await store.queries.latest('q')
    assert.ok(l)
    assert.deepEqual(l.values.temp, { ts: T0 + 9 * MIN, value: 9 })
    assert.deepEqual(l.values.door, { ts: T0 + 7 * MIN, value: 'open' })
    assert.deepEqual(l.values.humidity, { ts: T0 - MIN, value: 40 })
    assert.equal(l.lastSeenAt, new Date(T0 + 20 * MIN).toISOString())
    assert.equal(await store.queries.latest('nobody'), undefined)
  })
})
