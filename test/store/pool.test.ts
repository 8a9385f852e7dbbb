import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { freshStore, waitFor } from '../helpers/index.js'

describe('store: connections', () => {
  test('a server that drops the idle pooled connections does not end the process; the next query reconnects', async () => {
    const store = await freshStore()
    const killer = await freshStore(store.url)
    try {
      // Fill the pool with idle connections, then end them all from the server's side.
      await Promise.all([1, 2, 3].map(() => store.pool.query('SELECT pg_sleep(0.05)')))
      const idle = store.pool.idleCount
      assert.ok(idle >= 2)
      const killed = await killer.pool.query(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query = 'SELECT pg_sleep(0.05)'`,
      )
      assert.equal(killed.rows[0].n, idle)
      await waitFor(() => store.pool.idleCount === 0, 20_000, 'the pool dropping the dead connections')
      await store.ping()
      assert.equal((await store.devices.list(1, 'asc')).items.length, 0)
    } finally {
      await killer.stop()
      await store.stop()
    }
  })
})
