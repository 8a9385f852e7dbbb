import type pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { COPY_TIMEOUT_MS, msToTs } from './sql.js'

export interface QuarantineInsert {
  sourceId: string
  deviceId: string | null
  transport: string
  topic: string | null
  reason: string
  detail: string
  payload: Buffer
  acked: boolean
  receivedAt: number
}

export interface WriteResult {
  stored: number
  duplicate: number
  quarantined: number
  rejected: number
}

interface DeviceLatest {
  seen: number
  ts: Record<string, number>
  value: Record<string, unknown>
}

/** PostgreSQL's binary COPY header: the 11-byte signature, flags 0 (no OIDs), no header extension. */
const COPY_HEADER = Buffer.from('PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0', 'latin1')
/** Fields per row: device_id, msg_id, ts, received_at, values. */
const FIELDS = 5
/** timestamptz in binary is int64 microseconds since 2000-01-01 00:00 UTC. */
const PG_EPOCH_MS = Date.UTC(2000, 0, 1)
const TWO_32 = 2 ** 32
/** A batch of 5,000 fleet readings takes ~1.2 MB: start small, double as needed. */
const INITIAL_BYTES = 64 * 1024

/**
 * Rows for one binary COPY, written as they come straight into one growing Buffer: no string per row, no
 * escaping (binary fields are length-prefixed), no date formatting or parsing on either side.
 * See https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4 (binary format).
 */
export class TelemetryBatch {
  private buf = Buffer.allocUnsafe(INITIAL_BYTES)
  private pos = COPY_HEADER.copy(this.buf, 0)
  count = 0
  /** deviceId -> [lastReceivedAt, {key: {ts, value}}] */
  private readonly latest = new Map<string, DeviceLatest>()

  /**
   * `json`: JSON.stringify(values), as text or as its UTF-8 bytes, when the caller has it already
   * (readings/extract.ts reads it from the payload).
   */
  add(
    deviceId: string,
    msgId: string,
    ts: number,
    receivedAt: number,
    values: Record<string, unknown>,
    json: string | Uint8Array = JSON.stringify(values),
  ): void {
    const text = typeof json === 'string'
    // Worst case: UTF-8 takes at most 3 bytes per UTF-16 unit; 2 + 4 + 4 + 12 + 12 + 5 bytes of framing.
    this.reserve(39 + 3 * (deviceId.length + msgId.length) + (text ? 3 * json.length : json.length))
    const b = this.buf
    let p = this.pos
    b[p] = 0
    b[p + 1] = FIELDS
    p = this.text(p + 2, deviceId)
    p = this.text(p, msgId)
    p = timestamp(b, p, ts)
    p = timestamp(b, p, receivedAt)
    // jsonb's binary input is a version byte (1) and the JSON text.
    let n = json.length
    if (text) n = b.write(json, p + 5, 'utf8')
    else b.set(json, p + 5)
    int32(b, p, n + 1)
    b[p + 4] = 1
    this.pos = p + 5 + n
    this.count++
    let entry = this.latest.get(deviceId)
    if (!entry) {
      entry = { seen: receivedAt, ts: {}, value: {} }
      this.latest.set(deviceId, entry)
    } else if (receivedAt > entry.seen) entry.seen = receivedAt
    // Two flat maps, not an object per key per reading: this runs for every value of every row.
    const lts = entry.ts
    const lv = entry.value
    for (const k in values) {
      const cur = lts[k]
      if (cur === undefined || ts >= cur) {
        lts[k] = ts
        lv[k] = values[k]
      }
    }
  }

  /**
   * Per device (ids sorted, so concurrent batches lock device rows in one order): last seen, latest as JSON,
   * and the oldest and newest ts among its keys, which let PostgreSQL skip the per-key merge.
   */
  latestRows(): {
    ids: string[]
    seen: number[]
    latest: string[]
    minTs: Array<number | null>
    maxTs: Array<number | null>
  } {
    const ids = [...this.latest.keys()].sort()
    const seen: number[] = []
    const latest: string[] = []
    // null for a reading without values: nothing to merge, and no ts to compare.
    const minTs: Array<number | null> = []
    const maxTs: Array<number | null> = []
    for (const id of ids) {
      const e = this.latest.get(id)!
      const out: Record<string, { ts: number; value: unknown }> = {}
      let min = Number.POSITIVE_INFINITY
      let max = Number.NEGATIVE_INFINITY
      for (const k in e.ts) {
        const ts = e.ts[k]
        out[k] = { ts, value: e.value[k] }
        if (ts < min) min = ts
        if (ts > max) max = ts
      }
      seen.push(e.seen)
      latest.push(JSON.stringify(out))
      minTs.push(min === Number.POSITIVE_INFINITY ? null : min)
      maxTs.push(max === Number.NEGATIVE_INFINITY ? null : max)
    }
    return { ids, seen, latest, minTs, maxTs }
  }

  /** The whole COPY data, trailer included: a view of the batch's buffer, valid until the next `add`. */
  copyData(): Buffer {
    this.reserve(2)
    // The trailer, a field count of -1, is written past the rows without counting it in: adding goes on.
    this.buf[this.pos] = 0xff
    this.buf[this.pos + 1] = 0xff
    return this.buf.subarray(0, this.pos + 2)
  }

  /** A text field, length-prefixed; short ASCII (ids) copied here, the rest by the native encoder. */
  private text(p: number, s: string): number {
    const b = this.buf
    const len = s.length
    if (len <= 64) {
      let i = 0
      for (; i < len; i++) {
        const c = s.charCodeAt(i)
        if (c > 0x7f) break
        b[p + 4 + i] = c
      }
      if (i === len) {
        int32(b, p, len)
        return p + 4 + len
      }
    }
    const n = b.write(s, p + 4, 'utf8')
    int32(b, p, n)
    return p + 4 + n
  }

  private reserve(bytes: number): void {
    const need = this.pos + bytes
    if (need <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < need) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }
}

function int32(b: Buffer, p: number, v: number): void {
  b[p] = v >>> 24
  b[p + 1] = v >>> 16
  b[p + 2] = v >>> 8
  b[p + 3] = v
}

/** The range of a Date; it keeps ms and ms - PG_EPOCH_MS below 2^53, which the arithmetic below needs. */
const MAX_DATE_MS = 8.64e15

/**
 * A timestamptz field from ms since the Unix epoch: length 8, then int64 µs since 2000-01-01, big-endian.
 * µs past 2^53 do not fit a double exactly, so the product is formed in 32-bit halves: exact for every
 * integer ms a Date can hold.
 */
function timestamp(b: Buffer, p: number, ms: number): number {
  // Bit operations would turn NaN into 2000-01-01: refuse it, as toISOString did.
  if (!(Math.abs(ms) <= MAX_DATE_MS)) throw new RangeError(`timestamp ${ms} is not a valid time`)
  const d = Math.trunc(ms) - PG_EPOCH_MS
  const hi = Math.floor(d / TWO_32)
  const lo = (d - hi * TWO_32) * 1000
  const carry = Math.floor(lo / TWO_32)
  int32(b, p, 8)
  int32(b, p + 4, hi * 1000 + carry)
  int32(b, p + 8, lo - carry * TWO_32)
  return p + 12
}

const COLUMNS = 'device_id, msg_id, ts, received_at, values'
/** Connections that hold the staging table: created once per connection, dropped with a rolled-back transaction. */
const stagingReady = new WeakSet<pg.PoolClient>()

/**
 * Writes one ingest batch in one transaction: readings by COPY into a per-connection staging table, then
 * INSERT ... ON CONFLICT DO NOTHING (dedup on device + msgId), the devices' latest values, and the
 * quarantine. Throws the PostgreSQL error as is, for the caller to tell data errors from outages.
 */
export async function writeBatch(
  client: pg.PoolClient,
  batch: TelemetryBatch,
  quarantine: QuarantineInsert[],
): Promise<WriteResult> {
  let broken = false
  try {
    await client.query('BEGIN')
    let stored = 0
    if (batch.count > 0) {
      const data = batch.copyData()
      // Straight into the table when nothing in the batch was stored before (the usual case); a key
      // conflict (a redelivery after a crash, a resend) rolls that back and takes the dedup path.
      await client.query('SAVEPOINT direct')
      try {
        await copyInto(client, `COPY telemetry (${COLUMNS}) FROM STDIN (FORMAT binary)`, data)
        stored = batch.count
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err
        await client.query('ROLLBACK TO SAVEPOINT direct')
        if (!stagingReady.has(client)) {
          await client.query(
            'CREATE TEMP TABLE IF NOT EXISTS iot_staging (LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS',
          )
          stagingReady.add(client)
        }
        await copyInto(client, `COPY iot_staging (${COLUMNS}) FROM STDIN (FORMAT binary)`, data)
        const r = await client.query(`WITH ins AS (
            INSERT INTO telemetry (${COLUMNS}) SELECT ${COLUMNS} FROM iot_staging
            ON CONFLICT (device_id, msg_id) DO NOTHING RETURNING 1)
          SELECT count(*)::int AS n FROM ins`)
        stored = r.rows[0].n
      }
      const l = batch.latestRows()
      // Per key the newest ts wins (iot_merge_latest). When every key of the batch is at least as new as the
      // newest already merged (latest_ts_max), each one wins and a plain || gives the same result for half
      // the work; a late backlog takes the per-key merge.
      await client.query(
        `UPDATE devices d SET last_seen_at = greatest(d.last_seen_at, ${msToTs('u.seen')}),
           latest = CASE WHEN d.latest_ts_max IS NULL OR u.min_ts >= d.latest_ts_max THEN d.latest || u.latest
                         ELSE iot_merge_latest(d.latest, u.latest) END,
           latest_ts_max = greatest(d.latest_ts_max, u.max_ts)
         FROM unnest($1::text[], $2::int8[], $3::jsonb[], $4::int8[], $5::int8[]) AS u(id, seen, latest, min_ts, max_ts)
         WHERE d.id = u.id`,
        [l.ids, l.seen, l.latest, l.minTs, l.maxTs],
      )
    }
    let quarantined = 0
    let rejected = 0
    if (quarantine.length > 0) {
      const q = quarantine
      const r = await client.query(
        `INSERT INTO quarantine (source_id, device_id, transport, topic, reason, detail, payload, acked, received_at)
         SELECT s, d, t, tp, r, dt, p, a, ${msToTs('ra')}
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
                     $8::bool[], $9::int8[]) AS u(s, d, t, tp, r, dt, p, a, ra)
         ON CONFLICT (source_id) DO NOTHING RETURNING acked`,
        [
          q.map((x) => x.sourceId),
          q.map((x) => x.deviceId),
          q.map((x) => x.transport),
          q.map((x) => x.topic),
          q.map((x) => x.reason),
          q.map((x) => x.detail),
          q.map((x) => x.payload),
          q.map((x) => x.acked),
          q.map((x) => x.receivedAt),
        ],
      )
      for (const row of r.rows) row.acked ? quarantined++ : rejected++
    }
    await client.query('COMMIT')
    return { stored, duplicate: batch.count - stored, quarantined, rejected }
  } catch (err) {
    // A staging table created in the rolled-back transaction is gone with it.
    stagingReady.delete(client)
    // After a timeout or a lost connection the client's state is unknown: do not give it back to the pool.
    if (!(err as { code?: string }).code) broken = true
    else
      await client.query('ROLLBACK').catch(() => {
        broken = true
      })
    throw err
  } finally {
    client.release(broken)
  }
}

function copyInto(client: pg.PoolClient, sql: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = client.query(copyFrom(sql))
    // COPY is not covered by query_timeout: without this a lost server could keep it pending for good.
    const timer = setTimeout(() => stream.destroy(new Error('COPY timed out')), COPY_TIMEOUT_MS)
    stream.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    stream.on('finish', () => {
      clearTimeout(timer)
      resolve()
    })
    stream.end(data)
  })
}
