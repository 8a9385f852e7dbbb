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

/** Rows for one COPY, built as text as they come: no array of row objects, one string at the end. */
export class TelemetryBatch {
  private chunks: string[] = []
  private lastReceivedMs = -1
  private lastReceivedIso = ''
  count = 0
  /** deviceId -> [lastReceivedAt, {key: {ts, value}}] */
  private readonly latest = new Map<string, DeviceLatest>()

  add(
    deviceId: string,
    msgId: string,
    ts: number,
    receivedAt: number,
    values: Record<string, unknown>,
  ): void {
    if (receivedAt !== this.lastReceivedMs) {
      this.lastReceivedMs = receivedAt
      this.lastReceivedIso = new Date(receivedAt).toISOString()
    }
    this.chunks.push(
      `${copyEscape(deviceId)}\t${copyEscape(msgId)}\t${new Date(ts).toISOString()}\t${this.lastReceivedIso}\t${copyEscape(JSON.stringify(values))}\n`,
    )
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

  /** Device ids (sorted, so concurrent batches lock device rows in one order), last seen, latest as JSON. */
  latestRows(): { ids: string[]; seen: number[]; latest: string[] } {
    const ids = [...this.latest.keys()].sort()
    const seen: number[] = []
    const latest: string[] = []
    for (const id of ids) {
      const e = this.latest.get(id)!
      const out: Record<string, { ts: number; value: unknown }> = {}
      for (const k in e.ts) out[k] = { ts: e.ts[k], value: e.value[k] }
      seen.push(e.seen)
      latest.push(JSON.stringify(out))
    }
    return { ids, seen, latest }
  }

  text(): string {
    return this.chunks.join('')
  }
}

const COPY_SPECIAL = /[\\\t\n\r]/
/** PostgreSQL COPY text format: backslash, tab, newline and carriage return must be escaped. */
function copyEscape(s: string): string {
  if (!COPY_SPECIAL.test(s)) return s
  return s.replace(/[\\\t\n\r]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r',
  )
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
      const text = batch.text()
      // Straight into the table when nothing in the batch was stored before (the usual case); a key
      // conflict (a redelivery after a crash, a resend) rolls that back and takes the dedup path.
      await client.query('SAVEPOINT direct')
      try {
        await copyInto(client, `COPY telemetry (${COLUMNS}) FROM STDIN`, text)
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
        await copyInto(client, `COPY iot_staging (${COLUMNS}) FROM STDIN`, text)
        const r = await client.query(`WITH ins AS (
            INSERT INTO telemetry (${COLUMNS}) SELECT ${COLUMNS} FROM iot_staging
            ON CONFLICT (device_id, msg_id) DO NOTHING RETURNING 1)
          SELECT count(*)::int AS n FROM ins`)
        stored = r.rows[0].n
      }
      const l = batch.latestRows()
      await client.query(
        `UPDATE devices d SET last_seen_at = greatest(d.last_seen_at, ${msToTs('u.seen')}),
           latest = iot_merge_latest(d.latest, u.latest)
         FROM unnest($1::text[], $2::int8[], $3::jsonb[]) AS u(id, seen, latest) WHERE d.id = u.id`,
        [l.ids, l.seen, l.latest],
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

function copyInto(client: pg.PoolClient, sql: string, text: string): Promise<void> {
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
    stream.end(text)
  })
}
