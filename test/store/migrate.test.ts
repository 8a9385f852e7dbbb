import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import pg from 'pg'
import { Store, TelemetryBatch } from '../../src/store/index.js'
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
      assert.deepEqual(
        applied.flat().sort((a, b) => a - b),
        all,
      )
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

describe('store: migration 7, telemetry keyed by devices.pk', () => {
  test('a populated telemetry table is rewritten with every row, its dedup and indexes, and orphan rows kept readable', async () => {
    const url = await freshDatabase()
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    const rewrite = migrations.find((m) => m.name.startsWith('telemetry keyed by an integer device key'))!
    try {
      // The schema as it was before, with telemetry for two live devices and for one deleted before the ingest
      // locked devices (its rows stayed behind).
      await c.query(
        'CREATE TABLE iotcore_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
      )
      for (const m of migrations.filter((m) => m.version < rewrite.version)) {
        await c.query(m.sql)
        await c.query('INSERT INTO iotcore_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
      }
      await c.query(`INSERT INTO devices (id, name, token_hash) VALUES ('a', 'a', 'ha'), ('b', 'b', 'hb')`)
      await c.query(
        `INSERT INTO telemetry (device_id, msg_id, ts, received_at, values)
         SELECT d, 'm' || i, to_timestamp(1000 + i), to_timestamp(2000 + i), jsonb_build_object('v', i, 'd', d)
         FROM unnest(ARRAY['a', 'b', 'gone']) AS d, generate_series(1, 500) AS i`,
      )
    } finally {
      await c.end()
    }
    const store = new Store(url, createLogger('silent'), 1)
    try {
      // 7 and the migrations after it.
      assert.deepEqual(
        await store.migrate(),
        migrations.filter((m) => m.version >= rewrite.version).map((m) => m.version),
      )
      const q = (sql: string) => store.pool.query(sql).then((r) => r.rows)
      assert.deepEqual(
        await q(`SELECT d.id, count(*)::int AS n, count(*) FILTER (WHERE t.values ->> 'd' = d.id)::int AS own,
                        sum((t.values ->> 'v')::int)::int AS s
                 FROM telemetry t JOIN devices d ON d.pk = t.device_pk GROUP BY d.id ORDER BY d.id`),
        ['a', 'b', 'gone'].map((id) => ({ id, n: 500, own: 500, s: 125_250 })),
      )
      assert.deepEqual(
        (await q(`SELECT pk FROM devices ORDER BY pk`)).map((r) => r.pk),
        [1, 2, 3],
        'distinct keys',
      )
      // The orphan rows' device is back, retired: its telemetry is readable and removable through the API.
      const gone = await store.devices.get('gone')
      assert.ok(gone?.retiredAt, 'retired')
      assert.equal(await store.devices.credential('gone'), undefined)
      const points = await store.queries.telemetry({ deviceId: 'gone', key: 'v', limit: 2, order: 'asc' })
      assert.deepEqual(points.items, [
        { ts: 1_001_000, value: 1 },
        { ts: 1_002_000, value: 2 },
      ])
      assert.deepEqual(
        (await q(`SELECT indexdef FROM pg_indexes WHERE tablename = 'telemetry' ORDER BY indexname`)).map(
          (r) => r.indexdef.replace(/^.* USING /, ''),
        ),
        // telemetry_flagged is migration 10's.
        [
          'btree (device_pk, ts)',
          'btree (device_pk, ts) WHERE (flags IS NOT NULL)',
          'btree (device_pk, msg_id)',
          'brin (received_at)',
        ],
      )
      // Dedup holds across the rewrite: a stored reading sent again is a duplicate; a new one is stored.
      const b = new TelemetryBatch()
      b.add('a', 'm1', 5_000_000, 5_000_000, { v: -1 })
      b.add('a', 'm501', 5_000_000, 5_000_000, { v: 501 })
      assert.deepEqual(await store.writeBatch(b, []), {
        stored: 1,
        duplicate: 1,
        quarantined: 0,
        rejected: 0,
      })
      assert.equal(await store.devices.delete('gone'), true)
      assert.deepEqual(await q(`SELECT count(*)::int AS n FROM telemetry WHERE device_pk = 3`), [{ n: 0 }])
    } finally {
      await store.stop()
    }
  })
})
