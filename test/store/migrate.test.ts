import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Store } from '../../src/store/index.js'
import { migrations } from '../../src/store/migrations/index.js'
import { createLogger } from '../../src/logger.js'
import { freshDatabase } from '../helpers/index.js'

describe('store: migrations', () => {
  test('processes starting together apply each migration once; later starts apply none', async () => {
    const url = await freshDatabase()
    const log = createLogger('silent')
    const stores = [1, 2, 3].map(() => new Store(url, log, 1))
    try {
      const applied = await Promise.all(stores.map((s) => s.migrate()))
      const all = migrations.map((m) => m.version)
      assert.deepEqual(applied.flat().sort(), all)
      const recorded = await stores[0].pool.query('SELECT version FROM iotcore_migrations ORDER BY version')
      assert.deepEqual(
        recorded.rows.map((r) => r.version),
        all,
      )
      assert.deepEqual(await stores[1].migrate(), [])
    } finally {
      await Promise.all(stores.map((s) => s.stop()))
    }
  })
})
