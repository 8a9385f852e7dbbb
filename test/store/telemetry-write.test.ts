import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import pino from 'pino'
import { Store, TelemetryBatch } from '../../src/store/index.js'
import { migrations } from '../../src/store/migrations/index.js'
import { freshDatabase } from '../helpers/index.js'

const log = pino({ level: 'silent' })
const RECEIVED = Date.UTC(2026, 10, 29, 6, 0, 0, 123)
/** 0001-01-01 00:00 UTC (Date.UTC maps years 0-99 to 1900-1999). */
const YEAR_1 = new Date(Date.UTC(2000, 0, 1)).setUTCFullYear(1)

interface Row {
  deviceId: string
  msgId: string
  ts: number
  values: Record<string, unknown>
}

function batchOf(rows: Row[], receivedAt = RECEIVED): TelemetryBatch {
  const b = new TelemetryBatch()
  for (const r of rows) b.add(r.deviceId, r.msgId, r.ts, receivedAt, r.values)
  return b
}

describe('telemetry writes (binary COPY)', () => {
  let store: Store
  /** ts and received_at in µs as exact decimal text, so that a µs off is seen, not rounded away. */
  const stored = async (deviceId: string) =>
    (
      await store.pool.query(
        `SELECT msg_id, (extract(epoch FROM ts) * 1000000)::int8::text AS ts,
                (extract(epoch FROM received_at) * 1000000)::int8::text AS received, values
         FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ORDER BY msg_id COLLATE "C"`,
        [deviceId],
      )
    ).rows.map((r) => ({ msgId: r.msg_id, ts: r.ts, received: r.received, values: r.values }))
  const us = (ms: number) => String(BigInt(ms) * 1000n)
  /** Readings are stored only for devices that exist. */
  const create = async (...ids: string[]) => {
    for (const id of ids) await store.devices.create({ id, name: id, tokenHash: `hash-${id}` })
  }

  before(async () => {
    store = new Store(await freshDatabase(), log, 2)
    await store.start()
  })
  after(() => store.stop())

  test('odd text, numbers and timestamps come back from PostgreSQL exactly as written', async () => {
    const deviceId = 'gerät-🚚-\\-\t-"x"'
    await create(deviceId)
    const odd = {
      unicode: 'Grüße, Ελλάδα, 日本語',
      emoji: '🚚💨 and a lone ZWJ \u200d',
      backslashes: 'C:\\path\\to\\file \\n is not a newline \\\\',
      controls: 'tab\there, newline\nhere, return\rhere, bell\u0007',
      quotes: `"double" 'single' \`back\` "}`,
      copyLike: '\\.\n\\N\t\\t',
      big: 1.7976931348623157e308,
      negative: -123456789.125,
      maxSafe: Number.MAX_SAFE_INTEGER,
      minSafe: Number.MIN_SAFE_INTEGER,
      tiny: 5e-324,
      fraction: 0.1,
      yes: true,
      no: false,
      nested: { a: [1, 'two', { 'three\t': null }], 'key "with" quotes\\': 'v' },
    }
    const rows: Row[] = [
      { deviceId, msgId: 'odd', ts: 1764396000123, values: odd },
      { deviceId, msgId: 'msg\twith\ttabs\nand newline \\ 🚚', ts: 1764396000124, values: { v: 1 } },
      { deviceId, msgId: 'epoch', ts: 0, values: { v: 2 } },
      { deviceId, msgId: 'before 1970', ts: -1, values: { v: 3 } },
      { deviceId, msgId: 'just before 2000', ts: Date.UTC(1999, 11, 31, 23, 59, 59, 999), values: { v: 4 } },
      { deviceId, msgId: 'at 2000', ts: Date.UTC(2000, 0, 1), values: { v: 5 } },
      { deviceId, msgId: 'just after 2000', ts: Date.UTC(2000, 0, 1, 0, 0, 0, 1), values: { v: 6 } },
      { deviceId, msgId: 'year 1', ts: YEAR_1, values: { v: 7 } },
      { deviceId, msgId: 'year 9999', ts: 253402300799999, values: { v: 8 } },
      // Past 2^53 µs: the product must not be rounded like a double.
      { deviceId, msgId: 'year 275760', ts: 8.64e15, values: { v: 9 } },
      { deviceId, msgId: 'odd ms', ts: 9007199254739, values: { v: 10 } },
    ]
    const r = await store.writeBatch(batchOf(rows), [])
    assert.deepEqual(r, { stored: rows.length, duplicate: 0, quarantined: 0, rejected: 0 })
    const back = await stored(deviceId)
    const expected = rows
      .map((x) => ({ msgId: x.msgId, ts: us(x.ts), received: us(RECEIVED), values: x.values }))
      .sort((a, b) => (a.msgId < b.msgId ? -1 : a.msgId > b.msgId ? 1 : 0))
    assert.deepEqual(
      back.map((x) => x.msgId),
      expected.map((x) => x.msgId),
    )
    assert.deepEqual(back, expected)
    // PostgreSQL itself reads the same instants (not only our own conversion back).
    const text = await store.pool.query(
      `SELECT msg_id, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AS t FROM telemetry
       WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) AND msg_id IN ('before 1970', 'at 2000', 'year 9999', 'year 275760')
       ORDER BY msg_id`,
      [deviceId],
    )
    assert.deepEqual(
      text.rows.map((x) => `${x.msg_id}: ${x.t}`),
      [
        'at 2000: 2000-01-01 00:00:00.000',
        'before 1970: 1969-12-31 23:59:59.999',
        'year 275760: 275760-09-13 00:00:00.000',
        'year 9999: 9999-12-31 23:59:59.999',
      ],
    )
  })

  test('a batch that repeats stored readings stores only the new ones and keeps the first values', async () => {
    const deviceId = 'dup-device'
    await create(deviceId)
    const row = (i: number, v: number): Row => ({
      deviceId,
      msgId: `m${i}`,
      ts: 1764396000000 + i,
      values: { v },
    })
    const first = await store.writeBatch(batchOf([row(1, 1), row(2, 1), row(3, 1)]), [])
    assert.equal(first.stored, 3)
    // m2 and m3 again (a redelivery), m4 and m5 new: the COPY conflicts and the staging path dedups.
    const second = await store.writeBatch(batchOf([row(2, 2), row(3, 2), row(4, 2), row(5, 2)]), [])
    assert.deepEqual(second, { stored: 2, duplicate: 2, quarantined: 0, rejected: 0 })
    // The same reading twice in one batch: stored once.
    const third = await store.writeBatch(batchOf([row(6, 3), row(6, 4), row(1, 3)]), [])
    assert.deepEqual(third, { stored: 1, duplicate: 2, quarantined: 0, rejected: 0 })
    assert.deepEqual(
      (await stored(deviceId)).map((x) => `${x.msgId}=${x.values.v}`),
      ['m1=1', 'm2=1', 'm3=1', 'm4=2', 'm5=2', 'm6=3'],
    )
    // The connection that took the fallback path goes on writing batches, conflicting or not.
    const fourth = await store.writeBatch(batchOf([row(7, 5), row(5, 5)]), [])
    assert.deepEqual(fourth, { stored: 1, duplicate: 1, quarantined: 0, rejected: 0 })
    assert.equal((await store.writeBatch(batchOf([row(8, 6)]), [])).stored, 1)
  })

  test('a row PostgreSQL refuses fails the batch with its data error code and stores nothing of it', async () => {
    const deviceId = 'refused-device'
    await create(deviceId)
    const good: Row = { deviceId, msgId: 'good', ts: 1764396000000, values: { v: 1 } }
    // A NUL is valid UTF-16 but not in a PostgreSQL text value; before 4713 BC is out of timestamptz's range.
    for (const bad of [
      { ...good, msgId: 'nul\u0000inside' },
      { ...good, msgId: 'too old', ts: -300e12 },
    ]) {
      await assert.rejects(
        store.writeBatch(batchOf([good, bad]), []),
        (err: { code?: string }) => typeof err.code === 'string' && err.code.startsWith('22'),
      )
    }
    assert.deepEqual(await stored(deviceId), [])
    assert.equal((await store.writeBatch(batchOf([good]), [])).stored, 1)
  })

  test('a time that is not one is refused when added, never written as some other instant', () => {
    for (const ts of [Number.NaN, Number.POSITIVE_INFINITY, 8.64e15 + 1, -8.64e15 - 1]) {
      assert.throws(() => new TelemetryBatch().add('d', 'm', ts, RECEIVED, { v: 1 }), RangeError)
      assert.throws(() => new TelemetryBatch().add('d', 'm', RECEIVED, ts, { v: 1 }), RangeError)
    }
  })

  test('a reading without values stores its row and leaves the latest values as they were', async () => {
    await create('no-values')
    await store.writeBatch(batchOf([{ deviceId: 'no-values', msgId: 'a', ts: 5000, values: { v: 1 } }]), [])
    const r = await store.writeBatch(
      batchOf([{ deviceId: 'no-values', msgId: 'b', ts: 6000, values: {} }]),
      [],
    )
    assert.equal(r.stored, 1)
    assert.deepEqual((await store.queries.latest('no-values'))!.values, { v: { ts: 5000, value: 1 } })
  })

  test('a batch of devices interleaved, outgrowing the first buffer, stores every row under its own device', async () => {
    const long = 'ü'.repeat(4000)
    const devices = ['big-c', 'big-a', 'big-ü', 'big-b']
    await create(...devices)
    const rows: Row[] = Array.from({ length: 5000 }, (_, i) => ({
      deviceId: devices[i % devices.length],
      msgId: String(i).padStart(5, '0'),
      ts: 1764396000000 + i,
      values: { i, d: devices[i % devices.length], ...(i % 101 === 0 ? { long } : { lat: 52.5 + i / 1e6 }) },
    }))
    assert.equal((await store.writeBatch(batchOf(rows), [])).stored, 5000)
    const r = await store.pool.query(
      `SELECT d.id AS device_id, count(*)::int AS n, sum((values ->> 'i')::int)::int AS s,
              count(*) FILTER (WHERE values ->> 'long' = $2)::int AS long,
              count(*) FILTER (WHERE values ->> 'd' <> d.id)::int AS elsewhere
       FROM telemetry t JOIN devices d ON d.pk = t.device_pk WHERE d.id = ANY($1) GROUP BY d.id`,
      [devices, long],
    )
    const expected = devices.map((id) => {
      const own = rows.filter((x) => x.deviceId === id)
      const s = own.reduce((a, x) => a + (x.values.i as number), 0)
      return [
        id,
        { device_id: id, n: own.length, s, long: own.filter((x) => 'long' in x.values).length, elsewhere: 0 },
      ]
    })
    assert.deepEqual(Object.fromEntries(r.rows.map((x) => [x.device_id, x])), Object.fromEntries(expected))
  })
})

describe("devices' latest values", () => {
  let store: Store
  before(async () => {
    store = new Store(await freshDatabase(), log, 2)
    await store.start()
  })
  after(() => store.stop())

  const latest = async (id: string) => (await store.queries.latest(id))!.values
  const write = (deviceId: string, readings: Array<[number, Record<string, unknown>]>) =>
    store.writeBatch(
      batchOf(
        readings.map(([ts, values], i) => ({ deviceId, msgId: `${ts}-${i}-${Math.random()}`, ts, values })),
      ),
      [],
    )
  let n = 0
  const device = async () => {
    const id = `latest-${++n}`
    await store.devices.create({ id, name: id, tokenHash: `hash-${id}` })
    return id
  }

  test('per key the newest ts wins, within a batch and across batches in order', async () => {
    const id = await device()
    await write(id, [
      [1000, { a: 1, b: 1 }],
      [3000, { a: 3 }],
      [2000, { a: 2, c: 2 }],
    ])
    assert.deepEqual(await latest(id), {
      a: { ts: 3000, value: 3 },
      b: { ts: 1000, value: 1 },
      c: { ts: 2000, value: 2 },
    })
    // Newer than everything stored: its keys replace, the others stay.
    await write(id, [[4000, { b: 4, d: 'four' }]])
    assert.deepEqual(await latest(id), {
      a: { ts: 3000, value: 3 },
      b: { ts: 4000, value: 4 },
      c: { ts: 2000, value: 2 },
      d: { ts: 4000, value: 'four' },
    })
  })

  test('a backlog drained late never overwrites fresher values, but fills keys that were missing or older', async () => {
    const id = await device()
    await write(id, [[5000, { a: 5, b: 5 }]])
    await write(id, [[1000, { c: 1 }]])
    await write(id, [[2000, { a: 2, b: 2, d: 2 }]])
    assert.deepEqual(await latest(id), {
      a: { ts: 5000, value: 5 },
      b: { ts: 5000, value: 5 },
      c: { ts: 1000, value: 1 },
      d: { ts: 2000, value: 2 },
    })
    // Newer than one stored key (c) and older than the newest (a, b): per key, not per batch.
    await write(id, [[3000, { a: 3, c: 3 }]])
    assert.deepEqual(await latest(id), {
      a: { ts: 5000, value: 5 },
      b: { ts: 5000, value: 5 },
      c: { ts: 3000, value: 3 },
      d: { ts: 2000, value: 2 },
    })
    // The same ts as stored: the later write wins, as a resend with a corrected value would expect.
    await write(id, [[5000, { b: 'again' }]])
    assert.deepEqual((await latest(id)).b, { ts: 5000, value: 'again' })
    // Once newer than everything again, the whole batch wins.
    await write(id, [[6000, { a: 6, b: 6, c: 6, d: 6 }]])
    assert.deepEqual(await latest(id), {
      a: { ts: 6000, value: 6 },
      b: { ts: 6000, value: 6 },
      c: { ts: 6000, value: 6 },
      d: { ts: 6000, value: 6 },
    })
  })

  test('a msgId repeated within a batch: the first added is stored and latest, and the COPY goes straight in', async () => {
    const url = await freshDatabase()
    const s = new Store(url, log, 1)
    await s.start()
    try {
      await s.devices.create({ id: 'rep', name: 'rep', tokenHash: 'h-rep' })
      const b = batchOf([
        { deviceId: 'rep', msgId: 'x', ts: 1000, values: { temp: 10 } },
        { deviceId: 'rep', msgId: 'x', ts: 2000, values: { temp: 99, extra: 1 } },
        { deviceId: 'rep', msgId: 'y', ts: 1500, values: { hum: 5 } },
        { deviceId: 'rep', msgId: 'x', ts: 3000, values: { temp: 55 } },
      ])
      assert.deepEqual([b.count, b.rows], [4, 2], 'repeats are counted, not written')
      assert.deepEqual(await s.writeBatch(b, []), { stored: 2, duplicate: 2, quarantined: 0, rejected: 0 })
      assert.deepEqual((await s.queries.latest('rep'))!.values, {
        temp: { ts: 1000, value: 10 },
        hum: { ts: 1500, value: 5 },
      })
      const staging = await s.pool.query(
        `SELECT count(*)::int AS n FROM pg_class WHERE relname = 'iot_staging'`,
      )
      assert.equal(staging.rows[0].n, 0, 'no conflict, so no staging table was needed')
    } finally {
      await s.stop()
    }
  })

  test('the dedup path merges into latest only the rows it stored, newest ts per key, ties to the later row', async () => {
    const id = await device()
    const row = (msgId: string, ts: number, values: Record<string, unknown>) => ({
      deviceId: id,
      msgId,
      ts,
      values,
    })
    await store.writeBatch(batchOf([row('a', 1000, { v: 1, w: 1 })]), [])
    // 'a' again (newer, not stored) beside new rows: two of them share ts 2000, the later wins, as in a batch
    // without conflicts.
    const r = await store.writeBatch(
      batchOf([
        row('a', 9000, { v: 'not stored', z: 'not stored' }),
        row('b', 2000, { v: 'b', w: 'b' }),
        row('c', 2000, { v: 'c' }),
        row('d', 500, { w: 'older' }),
      ]),
      [],
    )
    assert.deepEqual(r, { stored: 3, duplicate: 1, quarantined: 0, rejected: 0 })
    assert.deepEqual(await latest(id), { v: { ts: 2000, value: 'c' }, w: { ts: 2000, value: 'b' } })
    // Every row a repeat: nothing merged, and the device is still seen.
    const before = (await store.queries.latest(id))!.lastSeenAt
    const again = await store.writeBatch(batchOf([row('b', 9999, { v: 'x' })], RECEIVED + 60_000), [])
    assert.deepEqual(again, { stored: 0, duplicate: 1, quarantined: 0, rejected: 0 })
    assert.deepEqual(await latest(id), { v: { ts: 2000, value: 'c' }, w: { ts: 2000, value: 'b' } })
    assert.notEqual((await store.queries.latest(id))!.lastSeenAt, before)
  })

  test('keys named after Object.prototype members are merged into latest, by both paths', async () => {
    const id = await device()
    const names = { toString: 1, valueOf: 2, hasOwnProperty: 3, constructorish: 4, __lookupGetter__: 5 }
    await store.writeBatch(batchOf([{ deviceId: id, msgId: 'p', ts: 1000, values: names }]), [])
    const at = (ts: number, v: Record<string, unknown>) =>
      Object.fromEntries(Object.entries(v).map(([k, value]) => [k, { ts, value }]))
    assert.deepEqual(await latest(id), at(1000, names))
    const r = await store.writeBatch(
      batchOf([
        { deviceId: id, msgId: 'p', ts: 3000, values: { toString: 'no' } },
        { deviceId: id, msgId: 'q', ts: 2000, values: { toString: 'yes', valueOf: 'yes' } },
      ]),
      [],
    )
    assert.equal(r.stored, 1)
    assert.deepEqual(await latest(id), {
      ...at(1000, names),
      ...at(2000, { toString: 'yes', valueOf: 'yes' }),
    })
  })

  test('latest merged before the latest_ts_max migration keeps its keys safe from an older backlog after it', async () => {
    const url = await freshDatabase()
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    try {
      // The schema as it was before the column existed, with a device whose latest the old merge wrote.
      await c.query(
        'CREATE TABLE iotcore_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
      )
      const added = migrations.find((m) => m.name.startsWith('devices.latest_ts_max'))!.version
      for (const m of migrations.filter((m) => m.version < added)) {
        await c.query(m.sql)
        await c.query('INSERT INTO iotcore_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
      }
      await c.query(
        `INSERT INTO devices (id, name, token_hash, latest) VALUES ('old', 'old', 'h', $1), ('empty', 'empty', 'h2', '{}')`,
        [{ a: { ts: 5000, value: 5 }, b: { ts: 1000, value: 1 } }],
      )
    } finally {
      await c.end()
    }
    const s = new Store(url, log, 1)
    await s.start()
    try {
      const batch = batchOf([
        { deviceId: 'old', msgId: 'x', ts: 2000, values: { a: 2, b: 2 } },
        { deviceId: 'empty', msgId: 'y', ts: 10, values: { z: 1 } },
      ])
      await s.writeBatch(batch, [])
      assert.deepEqual((await s.queries.latest('old'))!.values, {
        a: { ts: 5000, value: 5 },
        b: { ts: 2000, value: 2 },
      })
      assert.deepEqual((await s.queries.latest('empty'))!.values, { z: { ts: 10, value: 1 } })
    } finally {
      await s.stop()
    }
  })
})
