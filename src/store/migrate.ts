import type { Logger } from 'pino'
import { migrations } from './migrations/index.js'
import { type Db, inTransaction } from './pool.js'
import { LOCK_IDS } from './sql.js'

/**
 * Applies the migrations not yet recorded in `iotcore_migrations`, in order, each in its own transaction,
 * under an advisory lock so that processes starting together apply each once. Returns the versions applied.
 */
export async function migrate(db: Db, log: Logger): Promise<number[]> {
  const client = await db.checkout()
  const applied: number[] = []
  try {
    await client.query('SELECT pg_advisory_lock($1)', [LOCK_IDS.migrations])
    await client.query(`CREATE TABLE IF NOT EXISTS iotcore_migrations (
      version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
    const done = new Set(
      (await client.query('SELECT version FROM iotcore_migrations')).rows.map((r) => r.version),
    )
    for (const m of migrations) {
      if (done.has(m.version)) continue
      await inTransaction(client, async (c) => {
        await c.query(m.sql)
        await c.query('INSERT INTO iotcore_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
      })
      applied.push(m.version)
      log.info({ version: m.version, name: m.name }, 'migration applied')
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [LOCK_IDS.migrations]).catch(() => {})
    client.release()
  }
  return applied
}
