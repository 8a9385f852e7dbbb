import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type GapRow, RESEND, type Store } from '../../src/store/index.js'
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

  test("the count's first readings judged after later ones (two batches written at once) are no restart: the gap between them is found", async () => {
    const id = await device(store)
    // The device sent 1..3, then 7..8 (4..6 lost): the batch of 7..8 is judged first.
    await send(id, [7, 8], T0 + 10_000)
    await send(id, [1, 2, 3], T0)
    await send(id, [9, 10], T0 + 20_000)
    assert.deepEqual(await gaps(id), [{ from: 2, to: 6, missing: [[4, 6]], missingCount: 3, status: 'open' }])
    // Older readings below those are the count's earlier ones too; a repeat changes nothing.
    await send(id, [0, 2, 9], T0 - 10_000)
    assert.deepEqual(await gaps(id), [{ from: 2, to: 6, missing: [[4, 6]], missingCount: 3, status: 'open' }])
    // A reboot's count restarts with a later ts: that is a restart, and a gap after it is one.
    await send(id, [1, 3], T0 + 30_000)
    assert.deepEqual(await gaps(id), [
      { from: 2, to: 6, missing: [[4, 6]], missingCount: 3, status: 'closed' },
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

describe('quality: a gap is asked for again, once, from a device that can resend', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  const q = quality()
  let batches = 0
  const send = (id: string, seqs: number[]) => {
    const b = batches++
    return judged(store, q, [
      envelope(
        id,
        seqs.map((seq) => ({ msgId: `s${seq}-${b}`, ts: T0, seq })),
        T0,
      ),
    ])
  }
  /** The device's resend commands, oldest first: [from, to, status]. */
  const resends = async (id: string) =>
    (await store.commands.list(id, 100, 'asc')).items
      .filter((c) => c.name === RESEND.name)
      .map((c) => [c.params.from, c.params.to, c.status])

  test('a gap opened by a batch queues one resend command with the range it still misses; the gap changing later asks nothing more', async () => {
    const id = await device(store, { resend: true })
    // 4..8 found, then 4 and 6 arrive in the same batch: 5..8 is still missing.
    await send(id, [1, 2, 3, 9, 4, 6])
    assert.deepEqual(await resends(id), [[5, 8, 'queued']])
    const [cmd] = (await store.commands.list(id, 1, 'asc')).items
    assert.equal(cmd.deviceId, id)
    assert.deepEqual(cmd.params, { from: 5, to: 8 })
    assert.ok(Date.parse(cmd.expiresAt) - Date.parse(cmd.createdAt) === RESEND.ttlSeconds * 1000)
    await send(id, [7, 10])
    await send(id, [5, 8])
    assert.deepEqual(await resends(id), [[5, 8, 'queued']], 'asked once')
  })

  test('no command for a device without the capability (only JSON true is one), nor for a reordering within a batch', async () => {
    for (const attributes of [{}, { resend: 'true' }, { resend: false }]) {
      const id = await device(store, attributes)
      await send(id, [1, 3])
      assert.deepEqual(await resends(id), [], JSON.stringify(attributes))
      assert.equal((await gaps(store, id)).length, 1, 'the gap is tracked all the same')
    }
    const id = await device(store, { resend: true })
    await send(id, [1, 3, 2, 5, 4])
    assert.deepEqual(await resends(id), [])
  })

  test('a gap the device can no longer fill is not asked for: closed by a counter restart in its batch', async () => {
    const id = await device(store, { resend: true })
    // 11..19 opens, then the counter restarts: that gap is given up; 2 opens in the new count.
    await send(id, [10, 20, 0, 1, 3])
    assert.deepEqual(await resends(id), [[2, 2, 'queued']])
    // A jump too long to be lost readings opens no gap, asks nothing.
    await send(id, [500_000])
    assert.deepEqual(await resends(id), [[2, 2, 'queued']])
  })

  test('bounded: a batch opening many gaps gets at most 8 commands, the last spanning the rest; with 8 unanswered a new gap asks nothing until one is answered', async () => {
    const id = await device(store, { resend: true })
    // Every other reading lost: 20 gaps of one seq each (2, 4, ..., 40).
    await send(
      id,
      Array.from({ length: 21 }, (_, i) => 2 * i + 1),
    )
    const asked = await resends(id)
    assert.equal(asked.length, RESEND.maxOpen)
    assert.deepEqual(
      asked.slice(0, 7),
      [2, 4, 6, 8, 10, 12, 14].map((s) => [s, s, 'queued']),
    )
    assert.deepEqual(asked[7], [16, 40, 'queued'], 'the rest coalesced, none left unasked')
    await send(id, [41, 43])
    assert.equal((await resends(id)).length, RESEND.maxOpen, 'no room: 42 is not asked for')
    const [first] = (await store.commands.list(id, 1, 'asc')).items
    assert.ok(await store.commands.replied(first.id, id, true, null, null))
    await send(id, [45])
    assert.deepEqual((await resends(id)).at(-1), [44, 44, 'queued'], 'an answer makes room')
  })
})

async function gaps(store: Store, id: string): Promise<GapRow[]> {
  return (await store.gaps.list({ deviceId: id, status: 'all', limit: 100, order: 'asc' })).items
}
