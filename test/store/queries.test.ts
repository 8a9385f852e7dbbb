import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Store, TelemetryBatch } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'

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
    const all = await store.queries.telemetry(range)
    assert.deepEqual(
      all.map((p) => p.ts),
      [0, 1, 2, 3, 4, 5, 6, 8, 9].map((i) => T0 + i * MIN),
    )
    assert.equal(all[4].value, 'n/a')
    const some = await store.queries.telemetry({ ...range, from: T0 + 2 * MIN, to: T0 + 5 * MIN })
    assert.deepEqual(
      some.map((p) => p.value),
      [2, 3, 'n/a'],
    )
    const newest = await store.queries.telemetry({ ...range, order: 'desc', limit: 2 })
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
