import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { ServiceBeat, Store } from '../../src/store/index.js'
import { freshStore, waitFor } from '../helpers/index.js'

const beat = (id: string, startedAt: Date): ServiceBeat => ({
  id,
  roles: ['gateway', 'ingest'],
  host: 'h1',
  pid: 42,
  startedAt,
})

describe('store: services', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  const setBeat = (id: string, secondsAgo: number, column = 'beat_at') =>
    store.pool.query(`UPDATE services SET ${column} = now() - make_interval(secs => $2) WHERE id = $1`, [
      id,
      secondsAgo,
    ])

  test('a beat registers the service once and moves its beatAt; list shows the newest started first', async () => {
    const first = new Date('2026-01-01T00:00:00Z')
    await store.services.beat(beat('s-old', first))
    await store.services.beat(beat('s-new', new Date('2026-01-02T00:00:00Z')))
    await setBeat('s-old', 60)
    const before = (await store.services.list(10)).find((s) => s.id === 's-old')!
    await store.services.beat(beat('s-old', new Date()))
    const list = await store.services.list(10)
    assert.deepEqual(
      list.map((s) => s.id),
      ['s-new', 's-old'],
    )
    const old = list[1]
    assert.equal(old.startedAt, first.toISOString())
    assert.ok(Date.parse(old.beatAt) > Date.parse(before.beatAt))
    assert.deepEqual(old.roles, ['gateway', 'ingest'])
    assert.equal(old.stoppedAt, null)
    assert.equal((await store.services.list(1)).length, 1)
  })

  test('silentFor lists services beating no more that have not stopped', async () => {
    await store.services.beat(beat('s-silent', new Date()))
    await store.services.beat(beat('s-stopped', new Date()))
    await store.services.beat(beat('s-alive', new Date()))
    await setBeat('s-silent', 120)
    await setBeat('s-stopped', 120)
    await store.services.markStopped('s-stopped')
    const silent = await store.services.silentFor(90)
    assert.ok(silent.some((s) => s.id === 's-silent'))
    assert.ok(!silent.some((s) => s.id === 's-stopped' || s.id === 's-alive'))
    assert.notEqual((await store.services.list(100)).find((s) => s.id === 's-stopped')?.stoppedAt, null)
  })

  test('forget removes services stopped or silent that long ago, and only those', async () => {
    await store.services.beat(beat('f-stopped', new Date()))
    await store.services.beat(beat('f-silent', new Date()))
    await store.services.beat(beat('f-recent', new Date()))
    await store.services.markStopped('f-stopped')
    await setBeat('f-stopped', 1000, 'stopped_at')
    await setBeat('f-silent', 1000)
    await setBeat('f-recent', 10)
    assert.deepEqual((await store.services.forget(500)).sort(), ['f-silent', 'f-stopped'])
    const ids = (await store.services.list(100)).map((s) => s.id)
    assert.ok(ids.includes('f-recent'))
    assert.ok(!ids.includes('f-stopped') && !ids.includes('f-silent'))
  })

  describe('the organizer lock', () => {
    test('one holder across stores; release hands it on', async () => {
      const other = await freshStore(store.url)
      const a = store.services.organizerLock(() => {})
      const b = other.services.organizerLock(() => {})
      try {
        assert.equal(await a.tryAcquire(), true)
        assert.equal(await a.tryAcquire(), true)
        assert.equal(await b.tryAcquire(), false)
        await a.release()
        assert.equal(await b.tryAcquire(), true)
        assert.equal(await a.tryAcquire(), false, 'a released lock is not taken again')
      } finally {
        await a.release()
        await b.release()
        await other.stop()
      }
    })

    test('a holder whose connection is lost is told, and the lock goes to another; it reconnects as a follower', async () => {
      const other = await freshStore(store.url)
      let lost = 0
      const a = store.services.organizerLock(() => lost++)
      const b = other.services.organizerLock(() => {})
      try {
        assert.equal(await a.tryAcquire(), true)
        const killed = await store.pool.query(
          `SELECT pg_terminate_backend(pid) AS ok FROM pg_locks
           WHERE locktype = 'advisory' AND objid = 4171002 AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        )
        assert.deepEqual(
          killed.rows.map((r) => r.ok),
          [true],
        )
        await waitFor(() => lost === 1, 20_000, 'the lost lock reported')
        assert.equal(a.held, false)
        await waitFor(() => b.tryAcquire(), 20_000, 'the other store taking the lock')
        assert.equal(await a.tryAcquire(), false)
        await b.release()
        assert.equal(await a.tryAcquire(), true)
        assert.equal(lost, 1)
      } finally {
        await a.release()
        await b.release()
        await other.stop()
      }
    })
  })
})
