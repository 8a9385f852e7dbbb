import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { GapRow, Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'
import { device, due, envelope, judged, quality } from './helpers.js'

const T0 = Date.now() - 3_600_000

describe('quality: sequence gaps', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  const q = quality()
  const send = (id: string, seqs: number[], receivedAt = T0, s = store) =>
    judged(s, q, [
      envelope(
        id,
        seqs.map((seq) => ({ msgId: `s${seq}-${receivedAt}`, ts: receivedAt, seq })),
        receivedAt,
      ),
    ])
  const gaps = async (id: string, s = store) =>
    (await s.gaps.list({ deviceId: id, status: 'all', limit: 100, order: 'asc' })).items.map((g: GapRow) => ({
      from: g.from,
      to: g.to,
      missing: g.missing,
      missingCount: g.missingCount,
      status: g.status,
    }))

  test('a skipped range opens a gap; the readings arriving late shrink, split and close it', async () => {
    const id = await device(store)
    await send(id, [1, 2, 3, 9, 10])
    assert.deepEqual(await gaps(id), [{ from: 4, to: 8, missing: [[4, 8]], missingCount: 5, status: 'open' }])
    await send(id, [6, 4])
    assert.deepEqual(await gaps(id), [
      {
        from: 4,
        to: 8,
        missing: [
          [5, 5],
          [7, 8],
        ],
        missingCount: 3,
        status: 'open',
      },
    ])
    await send(id, [5, 8, 7, 11])
    assert.deepEqual(await gaps(id), [{ from: 4, to: 8, missing: [], missingCount: 0, status: 'closed' }])
  })

  test('readings reordered within one batch open no gap; a repeated seq changes nothing', async () => {
    const id = await device(store)
    await send(id, [1, 3, 2, 2, 4])
    await send(id, [3, 5])
    assert.deepEqual(await gaps(id), [])
  })

  test('a counter restart (seq 0 or 1 below the highest) closes the open gaps with what they miss, and counts anew', async () => {
    const id = await device(store)
    await send(id, [100, 102])
    await send(id, [0, 1, 3])
    assert.deepEqual(await gaps(id), [
      { from: 101, to: 101, missing: [[101, 101]], missingCount: 1, status: 'closed' },
      { from: 2, to: 2, missing: [[2, 2]], missingCount: 1, status: 'open' },
    ])
  })

  test('a jump too long to be lost readings restarts the count without a gap', async () => {
    const id = await device(store)
    await send(id, [5, 6, 500_000, 500_001])
    assert.deepEqual(await gaps(id), [])
  })

  test('a gap open past its time wants a sequence_gap alert (once); closing it clears the alert', async (t) => {
    // A store of its own: the other tests' gaps are an hour old, overdue too.
    const store = await freshStore()
    t.after(() => store.stop())
    const id = await device(store)
    const now = Date.now()
    await send(id, [1, 4], now - 700_000, store)
    await send(id, [10, 12], now, store)
    assert.equal(await store.gaps.raiseOverdue(600, 'minor'), 1, 'the older gap only')
    const raised = (await due(store, id)).sequence_gap
    assert.equal(raised.active, true)
    assert.equal(raised.severity, 'minor')
    assert.deepEqual(
      raised.details.gaps.map((g: { from: number; to: number; missing: number }) => [
        g.from,
        g.to,
        g.missing,
      ]),
      [[2, 3, 2]],
    )
    assert.equal(await store.gaps.raiseOverdue(600, 'minor'), 0, 'an alerted gap is not alerted again')
    const [open] = (await store.gaps.list({ deviceId: id, status: 'open', limit: 1, order: 'asc' })).items
    assert.ok(open.alertedAt)
    // The younger gap filling changes nothing; the overdue one filling clears the alert.
    await send(id, [11], now, store)
    assert.equal((await due(store, id)).sequence_gap.active, true)
    await send(id, [3, 2], now, store)
    assert.equal((await due(store, id)).sequence_gap.active, false)
    assert.deepEqual(
      (await gaps(id, store)).map((g) => [g.from, g.status]),
      [
        [2, 'closed'],
        [5, 'open'],
        [11, 'closed'],
      ],
    )
  })

  test('the API pages gaps newest first with a cursor, and filters open and closed', async () => {
    const id = await device(store)
    for (let i = 0; i < 5; i++) await send(id, [i * 3 + 1, i * 3 + 3], T0 + i * 1000)
    await send(id, [2], T0 + 9000)
    const all = await store.gaps.list({ deviceId: id, status: 'all', limit: 3, order: 'desc' })
    assert.deepEqual(
      all.items.map((g) => g.from),
      [14, 11, 8],
    )
    assert.ok(all.next)
    const rest = await store.gaps.list({
      deviceId: id,
      status: 'all',
      limit: 3,
      order: 'desc',
      after: all.next!,
    })
    assert.deepEqual(
      rest.items.map((g) => g.from),
      [5, 2],
    )
    assert.equal(rest.next, null)
    const closed = await store.gaps.list({ deviceId: id, status: 'closed', limit: 10, order: 'desc' })
    assert.deepEqual(
      closed.items.map((g) => g.from),
      [2],
    )
  })
})
