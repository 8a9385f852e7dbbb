import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { migrations } from '../../src/store/migrations/index.js'
import { IDEMPOTENCY_TTL_HOURS, type Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'

describe('store: idempotency keys', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
    for (const id of ['d1', 'd2', 'gone'])
      await store.devices.create({ id, name: id, tokenHash: `hash-${id}` })
  })
  after(() => store.stop())

  const keys = (s: Store) => s.idempotency
  const age = (key: string, column: 'claimed_at' | 'expires_at', seconds: number) =>
    store.pool.query(
      `UPDATE idempotency_keys SET ${column} = ${column} - make_interval(secs => $2) WHERE key = $1`,
      [key, seconds],
    )

  test('the first claim wins; a retry of the same body gets the recorded answer, another body a mismatch', async () => {
    const k = keys(store)
    assert.deepEqual(await k.claim('d1', 'a', 'h1'), { kind: 'claimed' })
    assert.deepEqual(await k.claim('d1', 'a', 'h1'), { kind: 'in_progress' }, 'answered yet? not yet')
    assert.deepEqual(await k.claim('d1', 'a', 'h2'), { kind: 'mismatch' })
    await k.complete('d1', 'a', 202, '{"accepted":1}')
    assert.deepEqual(await k.claim('d1', 'a', 'h1'), { kind: 'replay', status: 202, body: '{"accepted":1}' })
    assert.deepEqual(await k.claim('d1', 'a', 'h2'), { kind: 'mismatch' })
    assert.deepEqual(await k.claim('d2', 'a', 'h2'), { kind: 'claimed' }, 'keys are per device')
  })

  test('of concurrent claims of one key exactly one wins; the others are told it is in progress', async () => {
    const results = await Promise.all(Array.from({ length: 8 }, () => keys(store).claim('d1', 'race', 'h')))
    assert.equal(results.filter((r) => r.kind === 'claimed').length, 1)
    assert.equal(results.filter((r) => r.kind === 'in_progress').length, 7)
  })

  test('a released claim is free again; an answered one is not released', async () => {
    const k = keys(store)
    assert.equal((await k.claim('d1', 'rel', 'h1')).kind, 'claimed')
    await k.release('d1', 'rel')
    assert.equal((await k.claim('d1', 'rel', 'h2')).kind, 'claimed', 'judged afresh, any body')
    await k.complete('d1', 'rel', 202, '{}')
    await k.release('d1', 'rel')
    assert.equal((await k.claim('d1', 'rel', 'h2')).kind, 'replay')
  })

  test(`a record is kept ${IDEMPOTENCY_TTL_HOURS} h; past that the key is new again and pruned`, async () => {
    const k = keys(store)
    await k.claim('d1', 'old', 'h1')
    await k.complete('d1', 'old', 202, '{"accepted":1}')
    const { rows } = await store.pool.query(
      `SELECT extract(epoch FROM expires_at - claimed_at)::int AS kept FROM idempotency_keys WHERE key = 'old'`,
    )
    assert.equal(rows[0].kept, IDEMPOTENCY_TTL_HOURS * 3600)
    await age('old', 'expires_at', IDEMPOTENCY_TTL_HOURS * 3600 - 60)
    assert.equal((await k.claim('d1', 'old', 'h2')).kind, 'mismatch', 'a minute before expiry')
    await age('old', 'expires_at', 120)
    assert.equal((await k.claim('d1', 'old', 'h2')).kind, 'claimed', 'expired: a new request')
    await k.claim('d1', 'dead', 'h')
    await age('dead', 'expires_at', IDEMPOTENCY_TTL_HOURS * 3600 + 1)
    assert.ok((await k.prune()) >= 1)
    const left = await store.pool.query(`SELECT key FROM idempotency_keys WHERE expires_at <= now()`)
    assert.deepEqual(left.rows, [])
  })

  test('a claim left unanswered by a dead request is taken over after 30 s, for the same body only', async () => {
    const k = keys(store)
    await k.claim('d1', 'stale', 'h1')
    await age('stale', 'claimed_at', 29)
    assert.equal((await k.claim('d1', 'stale', 'h1')).kind, 'in_progress')
    await age('stale', 'claimed_at', 2)
    assert.equal((await k.claim('d1', 'stale', 'h2')).kind, 'mismatch')
    assert.equal((await k.claim('d1', 'stale', 'h1')).kind, 'claimed')
  })

  test("a deleted device's keys go with it", async () => {
    await keys(store).claim('gone', 'k', 'h')
    await store.pool.query(`DELETE FROM devices WHERE id = 'gone'`)
    const { rows } = await store.pool.query(`SELECT 1 FROM idempotency_keys WHERE device_id = 'gone'`)
    assert.equal(rows.length, 0)
  })

  test('the migration renames quarantine rows of invalid_timestamp to invalid_ts', async () => {
    const m = migrations.find((x) => x.sql.includes('CREATE TABLE idempotency_keys'))!
    await store.pool.query(
      `INSERT INTO quarantine (source_id, transport, reason, detail, payload, acked, received_at)
       VALUES ('old-1', 'http', 'invalid_timestamp', 'd', '\\x7b7d', false, now())`,
    )
    await store.pool.query('DROP TABLE idempotency_keys')
    await store.pool.query('DELETE FROM iotcore_migrations WHERE version = $1', [m.version])
    assert.deepEqual(await store.migrate(), [m.version])
    const { rows } = await store.pool.query(`SELECT reason FROM quarantine WHERE source_id = 'old-1'`)
    assert.deepEqual(rows, [{ reason: 'invalid_ts' }])
  })
})
