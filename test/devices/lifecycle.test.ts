import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { lockLiveDevices } from '../../src/store/devices.js'
import type { Store } from '../../src/store/index.js'
import { freshStore, waitFor } from '../helpers/index.js'

/**
 * The device side of a delete racing the ingest: the lock the ingest's batch transaction takes first
 * (lockLiveDevices) against retire (FOR UPDATE) and delete, on real PostgreSQL connections.
 */
describe('device lifecycle against the ingest: a reading is stored before its device went, or never', () => {
  let store: Store
  /** Two connections of their own, each standing for an ingest batch's transaction. */
  let a: pg.Client
  let b: pg.Client
  before(async () => {
    store = await freshStore()
    a = new pg.Client({ connectionString: store.url })
    b = new pg.Client({ connectionString: store.url })
    await a.connect()
    await b.connect()
  })
  after(async () => {
    await a.end()
    await b.end()
    await store.stop()
  })

  /**
   * True once some backend waits for a row lock (the retire or delete under test). Asked on the pool, outside
   * any transaction: within one, pg_stat_activity is a snapshot that would not change.
   */
  const someoneWaits = async () => {
    const r = await store.pool.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )
    return r.rows[0].n > 0
  }

  test('lockLiveDevices returns the live devices of a set, not retired, deleted or unknown ones', async () => {
    for (const id of ['l-live', 'l-retired', 'l-deleted'])
      await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
    assert.equal(await store.devices.retire('l-retired'), 'retired')
    assert.equal(await store.devices.retire('l-retired'), 'already retired')
    assert.equal(await store.devices.retire('l-none'), 'missing')
    assert.equal(await store.devices.delete('l-deleted'), true)
    const ids = ['l-live', 'l-retired', 'l-deleted', 'l-none']
    assert.deepEqual([...(await lockLiveDevices(a, ids)).keys()], ['l-live'])
    assert.deepEqual([...(await store.devices.live(ids))], ['l-live'])
    assert.equal(await store.devices.credential('l-retired'), undefined)
    assert.notEqual((await store.devices.get('l-retired'))?.retiredAt, null)
  })

  for (const how of ['retire', 'delete'] as const) {
    test(`a ${how} waits for a batch holding the device, and sees what it stored; a batch after it finds the device gone`, async () => {
      const id = `race-${how}`
      await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
      await a.query('BEGIN')
      const live = await lockLiveDevices(a, [id])
      assert.deepEqual([...live.keys()], [id])
      await a.query(
        `INSERT INTO telemetry (device_pk, msg_id, ts, received_at, values) VALUES ($1, 'm1', now(), now(), '{"x":1}')`,
        [live.get(id)],
      )
      const done = how === 'retire' ? store.devices.retire(id) : store.devices.delete(id)
      await waitFor(someoneWaits, 20_000, `the ${how} waiting for the batch`)
      await a.query('COMMIT')
      assert.equal(await done, how === 'retire' ? 'retired' : true)
      const kept = await a.query('SELECT count(*)::int AS n FROM telemetry WHERE device_pk = $1', [
        live.get(id),
      ])
      assert.equal(
        kept.rows[0].n,
        how === 'retire' ? 1 : 0,
        'stored before the device went: kept or deleted with it',
      )
      await b.query('BEGIN')
      assert.deepEqual([...(await lockLiveDevices(b, [id])).keys()], [], 'a later batch quarantines instead')
      await b.query('COMMIT')
    })
  }

  test('a batch that asks while a retire holds the row waits for it, then finds the device retired', async () => {
    const id = 'race-retire-first'
    await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
    await a.query('BEGIN')
    await a.query('SELECT 1 FROM devices WHERE id = $1 FOR UPDATE', [id])
    await a.query('UPDATE devices SET retired_at = now(), token_hash = NULL WHERE id = $1', [id])
    await b.query('BEGIN')
    const live = lockLiveDevices(b, [id])
    await waitFor(someoneWaits, 20_000, 'the batch waiting for the retire')
    await a.query('COMMIT')
    assert.deepEqual([...(await live).keys()], [])
    await b.query('COMMIT')
  })

  test('two batches holding the same device both update its latest values without a deadlock', async () => {
    const id = 'two-batches'
    await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
    await a.query('BEGIN')
    await b.query('BEGIN')
    assert.equal((await lockLiveDevices(a, [id])).size, 1)
    assert.equal((await lockLiveDevices(b, [id])).size, 1, 'KEY SHARE locks do not exclude each other')
    await a.query(`UPDATE devices SET latest = '{"x":{"ts":1,"value":1}}' WHERE id = $1`, [id])
    const second = b.query(`UPDATE devices SET latest = '{"x":{"ts":2,"value":2}}' WHERE id = $1`, [id])
    await waitFor(someoneWaits, 20_000, 'the second batch waiting for the first')
    await a.query('COMMIT')
    await second
    await b.query('COMMIT')
    const r = await a.query('SELECT latest FROM devices WHERE id = $1', [id])
    assert.equal(r.rows[0].latest.x.value, 2)
  })
})
