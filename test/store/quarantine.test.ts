import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type QuarantineInsert, type Store, TelemetryBatch } from '../../src/store/index.js'
import { freshStore, keysetPages } from '../helpers/index.js'

const T0 = Date.parse('2026-05-10T12:00:00Z')

function item(n: number, over: Partial<QuarantineInsert> = {}): QuarantineInsert {
  return {
    sourceId: `env-${n}:0`,
    deviceId: 'qd',
    transport: 'mqtt',
    topic: 'devices/qd/telemetry',
    reason: 'invalid_reading',
    detail: `reading ${n} is bad`,
    payload: Buffer.from(`{"n":${n}}`),
    acked: true,
    receivedAt: T0 + n * 1000,
    ...over,
  }
}

describe('store: quarantine', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
    const r = await store.writeBatch(new TelemetryBatch(), [
      item(1),
      item(2, { reason: 'malformed_json', payload: Buffer.from([0xff, 0x00]) }),
      item(3, { deviceId: 'other', acked: false }),
      item(4),
    ])
    assert.deepEqual(r, { stored: 0, duplicate: 0, quarantined: 3, rejected: 1 })
  })
  after(() => store.stop())

  const list = async (f: Partial<Parameters<Store['quarantine']['list']>[0]> = {}) =>
    (await store.quarantine.list({ limit: 100, order: 'desc', ...f })).items

  test('list: newest first, filtered by device, reason and [from, to)', async () => {
    assert.deepEqual(
      (await list()).map((x) => x.detail),
      ['reading 4 is bad', 'reading 3 is bad', 'reading 2 is bad', 'reading 1 is bad'],
    )
    assert.deepEqual(
      (await list({ deviceId: 'qd', reason: 'invalid_reading' })).map((x) => x.receivedAt),
      [new Date(T0 + 4000).toISOString(), new Date(T0 + 1000).toISOString()],
    )
    assert.equal((await list({ from: T0 + 2000, to: T0 + 4000 })).length, 2)
    assert.deepEqual(
      (await list({ order: 'asc' })).map((x) => x.detail),
      ['reading 1 is bad', 'reading 2 is bad', 'reading 3 is bad', 'reading 4 is bad'],
    )
  })

  test('list pages by (received at, id): the next page starts after the last row, the last page says so', async () => {
    const first = await store.quarantine.list({ limit: 2, order: 'desc' })
    assert.deepEqual(
      first.items.map((x) => x.detail),
      ['reading 4 is bad', 'reading 3 is bad'],
    )
    assert.ok(first.next)
    assert.equal(first.next.id, first.items[1].id)
    const second = await store.quarantine.list({ limit: 2, order: 'desc', after: first.next })
    assert.deepEqual(
      second.items.map((x) => x.detail),
      ['reading 2 is bad', 'reading 1 is bad'],
    )
    assert.equal(second.next, null)
  })

  test('rows received at one instant page in id order, each once, both ways', async () => {
    const s = await freshStore()
    try {
      const same = Array.from({ length: 25 }, (_, n) => item(n, { sourceId: `same:${n}`, receivedAt: T0 }))
      await s.writeBatch(new TelemetryBatch(), same)
      const walk = async (order: 'asc' | 'desc') =>
        (await keysetPages((after) => s.quarantine.list({ limit: 10, order, after }))).flat().map((x) => x.id)
      const asc = await walk('asc')
      assert.equal(new Set(asc).size, 25)
      assert.deepEqual(
        asc,
        [...asc].sort((a, b) => Number(a) - Number(b)),
      )
      assert.deepEqual(await walk('desc'), [...asc].reverse())
    } finally {
      await s.stop()
    }
  })

  test('get returns the row with its payload bytes as they came; an unknown or non-numeric id is undefined', async () => {
    const [two] = await list({ reason: 'malformed_json' })
    const row = await store.quarantine.get(two.id)
    assert.ok(row)
    assert.deepEqual(row.payload, Buffer.from([0xff, 0x00]))
    assert.equal(row.transport, 'mqtt')
    assert.equal(row.topic, 'devices/qd/telemetry')
    assert.equal(row.acked, true)
    assert.equal(row.replayedAt, null)
    assert.equal(await store.quarantine.get('999999'), undefined)
    assert.equal(await store.quarantine.get('1; DROP TABLE quarantine'), undefined)
  })

  test('a redelivered message is quarantined once', async () => {
    const again = await store.writeBatch(new TelemetryBatch(), [item(1)])
    assert.equal(again.quarantined, 0)
    assert.equal((await list({ from: T0 + 1000, to: T0 + 1001 })).length, 1)
  })

  test('markReplayed wins once among concurrent replays; unmarkReplayed makes it replayable again', async () => {
    const [one] = await list({ from: T0 + 1000, to: T0 + 1001 })
    const wins = await Promise.all([1, 2, 3].map(() => store.quarantine.markReplayed(one.id)))
    assert.deepEqual(wins.filter(Boolean), [true])
    assert.notEqual((await store.quarantine.get(one.id))?.replayedAt, null)
    await store.quarantine.unmarkReplayed(one.id)
    assert.equal((await store.quarantine.get(one.id))?.replayedAt, null)
    assert.equal(await store.quarantine.markReplayed(one.id), true)
  })
})
