import type pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { lockLiveDevices } from './devices.js'
import { type BatchJudge, JUDGE_RETURNING, judgeStored } from './rules.js'
import { COPY_TIMEOUT_MS, msToTs, tsToMs } from './sql.js'
import { announceStored } from './stored.js'

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

/**
 * Where readings came from: a queue envelope is one. When its device is gone (deleted or retired) before the
 * batch is written, its readings are quarantined as a whole, under its id, as `device_deleted`.
 */
export interface ReadingSource {
  id: string
  deviceId: string
  transport: string
  topic?: string
  receivedAt: number
  payload: Buffer
}

/** One device's part of a batch. */
interface DeviceRows {
  /** Its integer key (devices.pk), once the batch's devices are locked; 0 until then. */
  pk: number
  /** The newest receivedAt of its readings. */
  seen: number
  /**
   * Per key the newest ts and its value, among the rows kept. Null-prototype objects: a key named `toString` or
   * `valueOf` is data here, not a lookup into Object.prototype.
   */
  ts: Record<string, number>
  value: Record<string, unknown>
  /** The msgIds of its rows: a msgId seen again in the batch is a duplicate of the first (queue order). */
  msgIds: Set<string>
  /** Where each of its rows starts in the COPY buffer. */
  rows: number[]
  /** Readings added for it, duplicates included. */
  readings: number
}

/** A device gone before its batch was written: its readings, by the source they came in. */
export interface GoneSource {
  source: ReadingSource
  readings: number
}

/** PostgreSQL's binary COPY header: the 11-byte signature, flags 0 (no OIDs), no header extension. */
const COPY_HEADER = Buffer.from('PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0', 'latin1')
/** Fields per row: device_pk, msg_id, ts, received_at, values. */
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
 *
 * Each (device, msgId) gets one row, its first in the order added (queue order): a repeat is counted in
 * `count` but not written, so the COPY never conflicts with itself and `latest` is built from the rows kept.
 */
export class TelemetryBatch {
  private buf = Buffer.allocUnsafe(INITIAL_BYTES)
  private pos = COPY_HEADER.copy(this.buf, 0)
  /** Readings added, repeats included. */
  count = 0
  /** Rows written: readings less the repeats. */
  rows = 0
  private readonly devices = new Map<string, DeviceRows>()
  private readonly sources: ReadingSource[] = []
  /** Readings added under each source. */
  private readonly sourceReadings: number[] = []

  /**
   * The readings added from now on came in `source` (for its device): if that device is gone when the batch
   * is written, they are quarantined under the source's id. Without one they would only be left out.
   */
  from(source: ReadingSource): void {
    this.sources.push(source)
    this.sourceReadings.push(0)
  }

  /**
   * `json`: JSON.stringify(values), as text or as its UTF-8 bytes, when the caller has it already
   * (readings/extract.ts reads it from the payload). False for a repeat of a msgId already in the batch.
   */
  add(
    deviceId: string,
    msgId: string,
    ts: number,
    receivedAt: number,
    values: Record<string, unknown>,
    json: string | Uint8Array = JSON.stringify(values),
  ): boolean {
    let d = this.devices.get(deviceId)
    if (d?.msgIds.has(msgId)) {
      this.added(d)
      return false
    }
    const text = typeof json === 'string'
    // Worst case: UTF-8 takes at most 3 bytes per UTF-16 unit; 2 + 12 + 4 + 12 + 12 + 5 bytes of framing.
    this.reserve(47 + 3 * msgId.length + (text ? 3 * json.length : json.length))
    const b = this.buf
    const start = this.pos
    let p = start
    b[p] = 0
    b[p + 1] = FIELDS
    // The device's int8 key is not known yet: its 8 bytes are written by setKeys once the devices are locked.
    // Zeroed until then, so the buffer never carries stale memory (and two builds of one batch are equal).
    int32(b, p + 2, 8)
    b.fill(0, p + 6, p + 14)
    p = this.text(p + 14, msgId)
    p = timestamp(b, p, ts)
    p = timestamp(b, p, receivedAt)
    // jsonb's binary input is a version byte (1) and the JSON text.
    let n = json.length
    if (text) n = b.write(json, p + 5, 'utf8')
    else b.set(json, p + 5)
    int32(b, p, n + 1)
    b[p + 4] = 1
    this.pos = p + 5 + n
    this.rows++
    if (d === undefined) {
      d = {
        pk: 0,
        seen: receivedAt,
        ts: Object.create(null),
        value: Object.create(null),
        msgIds: new Set(),
        rows: [],
        readings: 0,
      }
      this.devices.set(deviceId, d)
    } else if (receivedAt > d.seen) d.seen = receivedAt
    d.msgIds.add(msgId)
    d.rows.push(start)
    this.added(d)
    // Two flat maps, not an object per key per reading: this runs for every value of every row.
    const lts = d.ts
    const lv = d.value
    for (const k in values) {
      const cur = lts[k]
      if (cur === undefined || ts >= cur) {
        lts[k] = ts
        lv[k] = values[k]
      }
    }
    return true
  }

  private added(d: DeviceRows): void {
    this.count++
    d.readings++
    const s = this.sourceReadings.length - 1
    if (s >= 0) this.sourceReadings[s]++
  }

  /** The batch's devices, sorted: concurrent batches lock device rows in one order. */
  deviceIds(): string[] {
    return [...this.devices.keys()].sort()
  }

  /**
   * Leaves out every row of these devices (gone before the batch could be written), and their readings from
   * `count`; returns the sources their readings came in. The rare path: the buffer is copied without them.
   */
  drop(gone: readonly string[]): GoneSource[] {
    const goneSet = new Set(gone)
    const out: GoneSource[] = []
    for (let i = 0; i < this.sources.length; i++) {
      const source = this.sources[i]
      if (goneSet.has(source.deviceId) && this.sourceReadings[i] > 0)
        out.push({ source, readings: this.sourceReadings[i] })
    }
    const dropped = new Set<number>()
    for (const id of gone) {
      const d = this.devices.get(id)
      if (d === undefined) continue
      for (const at of d.rows) dropped.add(at)
      this.count -= d.readings
      this.rows -= d.rows.length
      this.devices.delete(id)
    }
    if (dropped.size === 0) return out
    // Rows lie back to back in the order added: each ends where the next begins.
    const starts: number[] = []
    for (const d of this.devices.values()) for (const at of d.rows) starts.push(at)
    for (const at of dropped) starts.push(at)
    starts.sort((a, b) => a - b)
    const next = Buffer.allocUnsafe(this.buf.length)
    let p = COPY_HEADER.copy(next, 0)
    const moved = new Map<number, number>()
    for (let i = 0; i < starts.length; i++) {
      const at = starts[i]
      if (dropped.has(at)) continue
      const end = i + 1 < starts.length ? starts[i + 1] : this.pos
      moved.set(at, p)
      p += this.buf.copy(next, p, at, end)
    }
    for (const d of this.devices.values()) d.rows = d.rows.map((at) => moved.get(at)!)
    this.buf = next
    this.pos = p
    return out
  }

  /**
   * Writes each device's integer key into its rows (the COPY's first field); every device of the batch must
   * have one (drop the others first).
   */
  setKeys(pks: ReadonlyMap<string, number>): void {
    const b = this.buf
    for (const [id, d] of this.devices) {
      const pk = pks.get(id)
      if (pk === undefined) throw new Error(`no key for device ${id}`)
      d.pk = pk
      const hi = Math.floor(pk / TWO_32)
      const lo = pk - hi * TWO_32
      for (const at of d.rows) {
        int32(b, at + 6, hi)
        int32(b, at + 10, lo)
      }
    }
  }

  /**
   * Per device (sorted, as deviceIds): its key, last seen, latest as JSON, and the oldest and newest ts among its
   * keys, which let PostgreSQL skip the per-key merge.
   */
  latestRows(): {
    ids: string[]
    pks: number[]
    seen: number[]
    latest: string[]
    minTs: Array<number | null>
    maxTs: Array<number | null>
  } {
    const ids = this.deviceIds()
    const pks: number[] = []
    const seen: number[] = []
    const latest: string[] = []
    // null for a reading without values: nothing to merge, and no ts to compare.
    const minTs: Array<number | null> = []
    const maxTs: Array<number | null> = []
    for (const id of ids) {
      const e = this.devices.get(id)!
      const out: Record<string, { ts: number; value: unknown }> = Object.create(null)
      let min = Number.POSITIVE_INFINITY
      let max = Number.NEGATIVE_INFINITY
      for (const k in e.ts) {
        const ts = e.ts[k]
        out[k] = { ts, value: e.value[k] }
        if (ts < min) min = ts
        if (ts > max) max = ts
      }
      pks.push(e.pk)
      seen.push(e.seen)
      latest.push(JSON.stringify(out))
      minTs.push(min === Number.POSITIVE_INFINITY ? null : min)
      maxTs.push(max === Number.NEGATIVE_INFINITY ? null : max)
    }
    return { ids, pks, seen, latest, minTs, maxTs }
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

const COLUMNS = 'device_pk, msg_id, ts, received_at, values'
/**
 * The staging table of the dedup path, one per connection: the telemetry columns, and `seq`, the order rows
 * were added, which breaks ties in `latest` as TelemetryBatch does (of two kept rows with one ts, the later).
 */
const STAGING = 'iot_staging'
/** Connections that hold the staging table: created once per connection, dropped with a rolled-back transaction. */
const stagingReady = new WeakSet<pg.PoolClient>()

/** What is quarantined for a device gone before its readings were written. */
const DEVICE_DELETED = 'device_deleted'
const DEVICE_DELETED_DETAIL =
  'the device was deleted or retired before this message was stored; its readings were not stored'

/**
 * Merges per-device latest values (`u`: id, seen, latest, min_ts, max_ts) into devices. Per key the newest ts
 * wins (iot_merge_latest). When every key is at least as new as the newest already merged (latest_ts_max),
 * each one wins and a plain || gives the same result for half the work; a late backlog takes the per-key
 * merge.
 */
const MERGE_LATEST = `UPDATE devices d SET last_seen_at = greatest(d.last_seen_at, ${msToTs('u.seen')}),
    latest = CASE WHEN d.latest_ts_max IS NULL OR u.min_ts >= d.latest_ts_max THEN d.latest || u.latest
                  ELSE iot_merge_latest(d.latest, u.latest) END,
    latest_ts_max = greatest(d.latest_ts_max, u.max_ts)`

/**
 * The dedup path in one statement: inserts the staged rows not stored before, and merges into `latest` only
 * what it inserted (per device and key the newest ts, ties to the later row), so values that were not stored
 * never show as latest. Last seen comes from every reading of the batch ($1, $2): a repeat is a sign of life.
 */
const INSERT_STAGED = `WITH ins AS (
    INSERT INTO telemetry (${COLUMNS}) SELECT ${COLUMNS} FROM ${STAGING}
    ON CONFLICT (device_pk, msg_id) DO NOTHING RETURNING device_pk, msg_id),
  per_key AS (
    SELECT DISTINCT ON (s.device_pk, e.key) s.device_pk AS pk, e.key, ${tsToMs('s.ts')} AS ts, e.value
    FROM ins JOIN ${STAGING} s USING (device_pk, msg_id) CROSS JOIN LATERAL jsonb_each(s.values) AS e
    ORDER BY s.device_pk, e.key, s.ts DESC, s.seq DESC),
  kept AS (
    SELECT pk, jsonb_object_agg(key, jsonb_build_object('ts', ts, 'value', value)) AS latest,
           min(ts) AS min_ts, max(ts) AS max_ts
    FROM per_key GROUP BY pk),
  merged AS (
    ${MERGE_LATEST}
    FROM (SELECT b.id, b.seen, coalesce(k.latest, '{}') AS latest, k.min_ts, k.max_ts
          FROM unnest($1::text[], $2::int8[], $3::int8[]) AS b(id, seen, pk) LEFT JOIN kept k USING (pk)) AS u
    WHERE d.id = u.id)
  SELECT device_pk AS pk, array_agg(msg_id) AS msg_ids FROM ins GROUP BY device_pk`

/**
 * Writes one ingest batch in one transaction: first the batch's devices that are still live are locked
 * (lockLiveDevices), and the readings of any other are quarantined as `device_deleted` instead; then the
 * readings by binary COPY, the devices' latest values from the rows stored, and the quarantine. A batch with
 * nothing stored before goes straight into the table; one that repeats stored readings (a redelivery after a
 * crash, a resend) goes through a staging table and INSERT ... ON CONFLICT DO NOTHING (dedup on device +
 * msgId: the first stored wins). With a `judge`, the quality checks then judge the readings stored, in the
 * same transaction (judgeStored). Throws the PostgreSQL error as is, for the caller to tell data errors from
 * outages.
 */
export async function writeBatch(
  client: pg.PoolClient,
  batch: TelemetryBatch,
  quarantine: QuarantineInsert[],
  judge?: BatchJudge,
): Promise<WriteResult> {
  let broken = false
  try {
    await client.query('BEGIN')
    let stored = 0
    /** The readings of each device_deleted row, by source id: they count as quarantined, not as one each. */
    let goneReadings: Map<string, number> | undefined
    /** The batch's live devices, id to key, once locked. */
    let live: Map<string, number> = new Map()
    /** On the dedup path, the msgIds it inserted, by device key. */
    let inserted: Map<number, Set<string>> | undefined
    if (batch.count > 0) {
      const ids = batch.deviceIds()
      live = await lockLiveDevices(client, ids)
      if (live.size < ids.length) {
        goneReadings = new Map()
        quarantine = [...quarantine]
        for (const { source, readings } of batch.drop(ids.filter((id) => !live.has(id)))) {
          goneReadings.set(source.id, readings)
          quarantine.push({
            sourceId: source.id,
            deviceId: source.deviceId,
            transport: source.transport,
            topic: source.topic ?? null,
            reason: DEVICE_DELETED,
            detail: DEVICE_DELETED_DETAIL,
            payload: source.payload,
            acked: true,
            receivedAt: source.receivedAt,
          })
        }
      }
      batch.setKeys(live)
    }
    if (batch.rows > 0) {
      const data = batch.copyData()
      const l = batch.latestRows()
      // Straight into the table when nothing in the batch was stored before (the usual case): every row is
      // stored, and the latest values the batch built are those of the rows stored. A key conflict rolls that
      // back and takes the dedup path.
      await client.query('SAVEPOINT direct')
      try {
        await copyInto(client, `COPY telemetry (${COLUMNS}) FROM STDIN (FORMAT binary)`, data)
        stored = batch.rows
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err
        await client.query('ROLLBACK TO SAVEPOINT direct')
      }
      if (stored > 0) {
        const merged = await client.query(
          `${MERGE_LATEST}
           FROM unnest($1::text[], $2::int8[], $3::jsonb[], $4::int8[], $5::int8[]) AS u(id, seen, latest, min_ts, max_ts)
           WHERE d.id = u.id ${judge ? `RETURNING ${JUDGE_RETURNING}` : ''}`,
          [l.ids, l.seen, l.latest, l.minTs, l.maxTs],
        )
        if (judge) await judgeStored(client, judge, live, undefined, merged.rows)
      } else {
        if (!stagingReady.has(client)) {
          await client.query(
            `CREATE TEMP TABLE IF NOT EXISTS ${STAGING} (LIKE telemetry INCLUDING DEFAULTS,
               seq int8 GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS`,
          )
          stagingReady.add(client)
        }
        await copyInto(client, `COPY ${STAGING} (${COLUMNS}) FROM STDIN (FORMAT binary)`, data)
        inserted = new Map()
        for (const r of (await client.query(INSERT_STAGED, [l.ids, l.seen, l.pks])).rows) {
          inserted.set(r.pk, new Set(r.msg_ids))
          stored += r.msg_ids.length
        }
        if (judge && stored > 0) await judgeStored(client, judge, live, inserted)
      }
    }
    let quarantined = 0
    let rejected = 0
    /** Quarantine rows this batch added (a redelivered one adds none). */
    let quarantineRows = 0
    /** device_deleted readings quarantined by an earlier delivery of their message. */
    let again = 0
    if (quarantine.length > 0) {
      const q = quarantine
      const r = await client.query(
        `INSERT INTO quarantine (source_id, device_id, transport, topic, reason, detail, payload, acked, received_at)
         SELECT s, d, t, tp, r, dt, p, a, ${msToTs('ra')}
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
                     $8::bool[], $9::int8[]) AS u(s, d, t, tp, r, dt, p, a, ra)
         ON CONFLICT (source_id) DO NOTHING RETURNING source_id, acked`,
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
      quarantineRows = r.rows.length
      for (const row of r.rows) {
        const readings = goneReadings?.get(row.source_id)
        if (readings !== undefined) {
          quarantined += readings
          goneReadings!.delete(row.source_id)
        } else if (row.acked) quarantined++
        else rejected++
      }
      if (goneReadings) for (const n of goneReadings.values()) again += n
    }
    // Heard by the live streams only once this commits (store/stored.ts).
    await announceStored(client, {
      stored,
      quarantined: quarantineRows,
      ids: stored > 0 ? batch.deviceIds() : [],
    })
    await client.query('COMMIT')
    return { stored, duplicate: batch.count - stored + again, quarantined, rejected }
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
