import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import pino from 'pino'
import { IotError } from '../../src/errors.js'
import { LocalQueue } from '../../src/queue/local/index.js'
import type { AckSink, Envelope } from '../../src/queue/types.js'
import { waitFor } from '../helpers/index.js'

const log = pino({ level: 'silent' })
const env = (i: number, size = 20): Envelope => ({
  id: `t${i}`,
  deviceId: 'd',
  transport: 'mqtt',
  receivedAt: 1_000 + i,
  payload: Buffer.from(`{"i":${i}}`.padEnd(size, ' ')),
})

/** The stats once a refresh read `depth` back from LMDB (every 250 ms). */
async function waitForDepth(q: LocalQueue, depth: number) {
  return waitFor(() => (q.stats().depth === depth ? q.stats() : undefined))
}

class Recorder implements AckSink {
  acked: number[] = []
  corks = 0
  cork() {
    this.corks++
  }
  ack(token: number, _count: number, err: Error | undefined) {
    if (!err) this.acked.push(token)
  }
  uncork() {}
}

describe('local durable queue (LMDB)', () => {
  test('appends in one turn share a commit; every token is acked once, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const q = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await q.start()
    const sink = new Recorder()
    for (let i = 0; i < 500; i++) q.enqueue(env(i), sink, i, 1)
    await new Promise((r) => setTimeout(r, 50))
    while (q.appending > 0) await new Promise((r) => setTimeout(r, 10))
    assert.deepEqual(
      sink.acked,
      Array.from({ length: 500 }, (_, i) => i),
    )
    assert.equal(sink.corks, 1, 'one commit for one turn of appends')
    await q.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('what was acked survives a reopen, and comes out oldest first until consumed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    let q = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await q.start()
    // One commit each: an entry apiece (appends of one commit share an entry, tested below).
    for (const i of [1, 2, 3]) await q.enqueueAll([env(i)])
    await q.stop()
    q = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await q.start()
    assert.equal(q.stats().depth, 3)
    const c = q.consumer()
    const b = await c.next(2, 10)
    assert.deepEqual(
      b!.items.map((e) => e.id.split(':')[1]),
      ['1', '2'],
    )
    assert.deepEqual(
      b!.items.map((e) => e.payload.toString().trim()),
      ['{"i":1}', '{"i":2}'],
    )
    b!.nack()
    const again = await c.next(2, 10)
    assert.deepEqual(
      again!.items.map((e) => e.id.split(':')[1]),
      ['1', '2'],
      'a nacked batch comes back first',
    )
    assert.equal(again!.attempt, 1, 'and knows it is a second delivery')
    await again!.ack()
    const rest = await c.next(10, 10)
    assert.deepEqual(
      rest!.items.map((e) => e.receivedAt),
      [1003],
    )
    await rest!.ack()
    assert.equal(q.stats().depth, 0)
    await c.close()
    await q.stop()
    // Ids are stable across a reopen: they dedup the quarantine.
    rmSync(dir, { recursive: true, force: true })
  })

  test('the appends of one commit share an entry: numbered one by one, handed out and removed together', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const q = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await q.start()
    await q.enqueueAll([env(0)])
    // 600 in one turn: one commit, in entries of at most 256 records (256, 256, 88).
    await q.enqueueAll(Array.from({ length: 600 }, (_, i) => env(i + 1)))
    await q.enqueueAll([env(601)])
    const stats = await waitForDepth(q, 602)
    assert.equal(stats.depth, 602, 'depth counts records, not entries')
    const c = q.consumer()
    const at = (b: { items: readonly Envelope[] }) => b.items.map((e) => e.receivedAt - 1000)
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)
    // A batch takes whole entries: the first record's entry, then not the next (256 would overfill 10).
    const first = (await c.next(10, 1))!
    assert.deepEqual(at(first), [0])
    // An entry bigger than the batch comes whole rather than not at all.
    const big = (await c.next(10, 1))!
    assert.deepEqual(at(big), range(1, 257))
    const ids = big.items.map((e) => Number(e.id.split(':')[1]))
    assert.deepEqual(ids, range(2, 258), 'each record has its own number, as when each had an entry')
    big.nack()
    const again = (await c.next(1000, 1))!
    assert.deepEqual(at(again), range(1, 602), 'a nacked group comes back first, whole')
    assert.deepEqual(
      again.items.slice(0, 256).map((e) => e.id),
      big.items.map((e) => e.id),
      'with the same ids: they dedup the quarantine',
    )
    await again.ack()
    await first.ack()
    assert.equal((await waitForDepth(q, 0)).depth, 0)
    await c.close()
    await q.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('past the disk budget appends are refused with IOT_ERR_QUEUE_FULL, never taken and dropped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const q = new LocalQueue(dir, 1024 * 1024, log, 'append')
    await q.start()
    const sink = new Recorder()
    let refused = 0
    for (let i = 0; i < 400; i++) {
      try {
        q.enqueue(env(i, 8000), sink, i, 1)
      } catch (err) {
        assert.ok(err instanceof IotError && err.code === 'IOT_ERR_QUEUE_FULL')
        refused++
      }
    }
    while (q.appending > 0) await new Promise((r) => setTimeout(r, 10))
    assert.ok(refused > 0)
    assert.equal(sink.acked.length + refused, 400, 'every append was either acked or refused')
    assert.equal(q.stats().full, true)
    await q.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  test('records stay whole while the writer reuses its slabs: many commits of many sizes read back as written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const q = new LocalQueue(dir, 256 * 1024 * 1024, log, 'append')
    await q.start()
    // ~50 commits of ~150 KB: entries span slabs of 256 KiB, each reused once the commits of its entries are
    // done, while later commits are in flight; now and then a record larger than a slab, in one of its own.
    const payloads: Buffer[] = []
    const pending: Promise<void>[] = []
    const device = (n: number) => `d${Math.floor(n / 4) % 3}`
    for (let c = 0; c < 50; c++) {
      const envs: Envelope[] = []
      for (let i = 0; i < 50; i++) {
        const n = payloads.length
        const size = n % 97 === 0 ? 300 * 1024 : 100 + ((n * 7919) % 6000)
        const payload = Buffer.alloc(size, n % 251)
        payload.writeUInt32LE(n, 0)
        payloads.push(payload)
        // Devices in runs, as connections append them, with ids of one length; every other one on its own topic.
        const deviceId = device(n)
        const topic = n % 2 ? `devices/${deviceId}/telemetry` : undefined
        envs.push({ id: `t${n}`, deviceId, topic, transport: 'mqtt', receivedAt: n, payload })
      }
      pending.push(q.enqueueAll(envs))
      if (c % 3 === 2) await Promise.all(pending.splice(0))
    }
    await Promise.all(pending)
    const c = q.consumer()
    const read: Envelope[] = []
    while (read.length < payloads.length) read.push(...(await c.next(5000, 1))!.items)
    assert.equal(read.length, payloads.length)
    for (const [n, e] of read.entries()) {
      assert.equal(e.receivedAt, n)
      assert.equal(e.deviceId, device(n))
      assert.equal(e.topic, n % 2 ? `devices/${device(n)}/telemetry` : undefined)
      assert.ok(e.payload.equals(payloads[n]), `record ${n} read back as written`)
    }
    await c.close()
    await q.stop()
    rmSync(dir, { recursive: true, force: true })
  })
})

describe('local queue consumer after failures', () => {
  test('nacked batches are read again in full batches, and what is still handed out is not handed out twice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const q = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await q.start()
    for (let i = 0; i < 100; i++) await q.enqueueAll([env(i)])
    const c = q.consumer()
    const at = (b: { items: readonly Envelope[] }) => b.items.map((e) => e.receivedAt - 1000)
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)
    // An outage: batches fail one after the other while others are still out.
    const a = (await c.next(10, 1))!
    const b = (await c.next(10, 1))!
    a.nack()
    const around = (await c.next(30, 1))!
    assert.deepEqual(at(around), [...range(0, 10), ...range(20, 40)], 'read around the batch still out')
    b.nack()
    const again = (await c.next(10, 1))!
    assert.deepEqual(at(again), range(10, 20), 'the failed batch comes back though a later read went past it')
    again.nack()
    around.nack()
    // A batch whose window is still open when an earlier one fails picks up the rewound entries after its
    // own: failing in turn, it must rewind to the earliest of them, not to its first.
    const early = (await c.next(10, 1))!
    const window = c.next(1000, 200)
    await new Promise((r) => setTimeout(r, 50))
    await q.enqueueAll([env(100)])
    early.nack()
    const late = (await window)!
    assert.deepEqual(
      at(late).sort((x, y) => x - y),
      range(0, 101),
    )
    assert.notEqual(at(late)[0], 0, 'its first entry is not its earliest')
    late.nack()
    // The database is back: one read takes the whole backlog, oldest first.
    const all = (await c.next(1000, 1))!
    assert.deepEqual(at(all), range(0, 101))
    await all.ack()
    assert.equal(q.stats().depth, 0)
    await c.close()
    await q.stop()
    rmSync(dir, { recursive: true, force: true })
  })
})

describe('local queue, one appender per directory', () => {
  test('a second appending queue is refused at start with IOT_ERR_QUEUE_LOCKED; consuming queues open beside it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'q-'))
    const first = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await first.start()
    const second = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await assert.rejects(second.start(), (err: unknown) => {
      assert.ok(err instanceof IotError)
      assert.equal(err.code, 'IOT_ERR_QUEUE_LOCKED')
      assert.match(err.message, new RegExp(`pid ${process.pid}\\b`), 'names the holder')
      assert.match(err.message, /AMQP_URL/, 'says what to do for several gateway processes')
      return true
    })
    await second.stop()

    await first.enqueueAll([env(1), env(2)])
    const reader = new LocalQueue(dir, 64 * 1024 * 1024, log, 'consume')
    await reader.start()
    assert.throws(
      () => reader.enqueue(env(3), new Recorder(), 0, 1),
      (err: unknown) => err instanceof IotError && err.code === 'IOT_ERR_QUEUE_UNAVAILABLE',
      'a consuming queue appends nothing',
    )
    const c = reader.consumer()
    const b = (await c.next(10, 10))!
    assert.deepEqual(
      b.items.map((e) => e.receivedAt),
      [1001, 1002],
    )
    await b.ack()

    // The appender stops (or dies): the next one takes the lock, and its keys go on after the removed ones,
    // so the consumer's cursor, already past them, still sees its entries.
    await first.stop()
    const next = new LocalQueue(dir, 64 * 1024 * 1024, log, 'append')
    await next.start()
    await next.enqueueAll([env(3)])
    const after = (await c.next(10, 10))!
    assert.deepEqual(
      after.items.map((e) => e.receivedAt),
      [1003],
    )
    await after.ack()
    await c.close()
    await reader.stop()
    await next.stop()
    rmSync(dir, { recursive: true, force: true })
  })
})
