import pg from 'pg'
import type { Logger } from 'pino'
import { IotError } from '../errors.js'
import { migrations } from './migrations/index.js'
import { QUERY_TIMEOUT_MS, msToTs, PG_EPOCH, tsToMs } from './sql.js'
import {
  type QuarantineInsert,
  type TelemetryBatch,
  type WriteResult,
  writeBatch,
} from './telemetry-write.js'

export { TelemetryBatch, type QuarantineInsert, type WriteResult } from './telemetry-write.js'

// int8 (count, bigint epoch ms) as a JS number: our values stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v))

/** Connections beyond the ingest's: API queries, the organizer, LISTEN. */
const POOL_EXTRA_CONNECTIONS = 6
/** A lock id for migrations, so several processes starting at once apply them once. */
const MIGRATION_LOCK_ID = 4_171_001

export interface DeviceRow {
  id: string
  name: string
  imei: string | null
  attributes: Record<string, unknown>
  createdAt: string
  lastSeenAt: string | null
}

export interface Credential {
  id: string
  tokenHash: string
  imei: string | null
}

export interface QuarantineRow {
  id: string
  deviceId: string | null
  transport: string
  topic: string | null
  reason: string
  detail: string
  payload: Buffer
  acked: boolean
  receivedAt: string
  replayedAt: string | null
}

export type Aggregate = 'avg' | 'min' | 'max' | 'sum' | 'count'

/** PostgreSQL, embedded or external: devices, telemetry, quarantine. */
export class Store {
  readonly pool: pg.Pool

  constructor(
    readonly url: string,
    private readonly log: Logger,
    poolSize: number,
  ) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: poolSize + POOL_EXTRA_CONNECTIONS,
      // Fail fast while the server is down, so the ingest backs off instead of queueing connection attempts.
      connectionTimeoutMillis: 5000,
      // A server that vanishes without closing the socket would leave a query (a ROLLBACK, a COMMIT)
      // waiting forever, and its batch with it: give up on the client instead.
      query_timeout: QUERY_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
    })
    // An idle client losing its server (a restart) must not crash the process; the pool replaces it.
    this.pool.on('error', (err) => this.log.warn({ err: err.message }, 'idle PostgreSQL connection lost'))
  }

  async start(): Promise<void> {
    await this.migrate()
  }

  async stop(): Promise<void> {
    await this.pool.end()
  }

  async migrate(): Promise<number[]> {
    const client = await this.checkout()
    const applied: number[] = []
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID])
      await client.query(`CREATE TABLE IF NOT EXISTS iotcore_migrations (
        version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
      const done = new Set(
        (await client.query('SELECT version FROM iotcore_migrations')).rows.map((r) => r.version),
      )
      for (const m of migrations) {
        if (done.has(m.version)) continue
        await client.query('BEGIN')
        try {
          await client.query(m.sql)
          await client.query('INSERT INTO iotcore_migrations (version, name) VALUES ($1, $2)', [
            m.version,
            m.name,
          ])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK')
          throw err
        }
        applied.push(m.version)
        this.log.info({ version: m.version, name: m.name }, 'migration applied')
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => {})
      client.release()
    }
    return applied
  }

  /**
   * A pooled client with an error listener for its checked-out time: pg emits 'error' on a client whose server
   * goes away between queries, and an unheard 'error' event would end the process.
   */
  private async checkout(): Promise<pg.PoolClient> {
    const client = await this.pool.connect()
    if (client.listenerCount('error') === 0)
      client.on('error', (err) => this.log.debug({ err: err.message }, 'PostgreSQL connection lost'))
    return client
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1')
  }

  // ---- devices

  async createDevice(d: {
    id: string
    name: string
    imei?: string
    tokenHash: string
    attributes?: Record<string, unknown>
  }): Promise<DeviceRow> {
    try {
      const r = await this.pool.query(
        `INSERT INTO devices (id, name, imei, token_hash, attributes) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, imei, attributes, created_at, last_seen_at`,
        [d.id, d.name, d.imei ?? null, d.tokenHash, d.attributes ?? {}],
      )
      return deviceRow(r.rows[0])
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        const c = (err as { constraint?: string }).constraint ?? ''
        throw new IotError('IOT_ERR_DEVICE_CONFLICT', c.includes('imei') ? 'imei' : 'id')
      }
      throw err
    }
  }

  async listDevices(limit: number, offset: number): Promise<DeviceRow[]> {
    const r = await this.pool.query(
      `SELECT id, name, imei, attributes, created_at, last_seen_at FROM devices ORDER BY created_at, id
       LIMIT $1 OFFSET $2`,
      [limit, offset],
    )
    return r.rows.map(deviceRow)
  }

  async getDevice(id: string): Promise<DeviceRow | undefined> {
    const r = await this.pool.query(
      'SELECT id, name, imei, attributes, created_at, last_seen_at FROM devices WHERE id = $1',
      [id],
    )
    return r.rows[0] ? deviceRow(r.rows[0]) : undefined
  }

  async deleteDevice(id: string): Promise<boolean> {
    const client = await this.checkout()
    try {
      await client.query('BEGIN')
      const r = await client.query('DELETE FROM devices WHERE id = $1', [id])
      await client.query('DELETE FROM telemetry WHERE device_id = $1', [id])
      await client.query('COMMIT')
      return (r.rowCount ?? 0) > 0
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {})
      throw err
    } finally {
      client.release()
    }
  }

  async setTokenHash(id: string, tokenHash: string): Promise<boolean> {
    const r = await this.pool.query('UPDATE devices SET token_hash = $2 WHERE id = $1', [id, tokenHash])
    return (r.rowCount ?? 0) > 0
  }

  async credentials(): Promise<Credential[]> {
    const r = await this.pool.query('SELECT id, token_hash, imei FROM devices')
    return r.rows.map((x) => ({ id: x.id, tokenHash: x.token_hash, imei: x.imei }))
  }

  async credential(id: string): Promise<Credential | undefined> {
    const r = await this.pool.query('SELECT id, token_hash, imei FROM devices WHERE id = $1', [id])
    const x = r.rows[0]
    return x ? { id: x.id, tokenHash: x.token_hash, imei: x.imei } : undefined
  }

  // ---- ingest

  /** One ingest batch in one transaction (see telemetry-write.ts); throws PostgreSQL's error as is. */
  async writeBatch(batch: TelemetryBatch, quarantine: QuarantineInsert[]): Promise<WriteResult> {
    return writeBatch(await this.checkout(), batch, quarantine)
  }

  // ---- queries

  async telemetry(
    deviceId: string,
    key: string,
    from: number | undefined,
    to: number | undefined,
    limit: number,
    order: 'asc' | 'desc',
  ): Promise<Array<{ ts: number; value: unknown }>> {
    const r = await this.pool.query(
      `SELECT ${tsToMs('ts')} AS ts, values -> $2 AS value FROM telemetry
       WHERE device_id = $1 AND values ? $2
         AND ($3::int8 IS NULL OR ts >= ${msToTs('$3::int8')}) AND ($4::int8 IS NULL OR ts < ${msToTs('$4::int8')})
       ORDER BY ts ${order === 'asc' ? 'ASC' : 'DESC'}, msg_id LIMIT $5`,
      [deviceId, key, from ?? null, to ?? null, limit],
    )
    return r.rows
  }

  async aggregate(
    deviceId: string,
    key: string,
    agg: Aggregate,
    intervalMs: number,
    from: number | undefined,
    to: number | undefined,
    limit: number,
    order: 'asc' | 'desc',
  ): Promise<Array<{ ts: number; value: number }>> {
    const fn =
      agg === 'count'
        ? 'count(*)::float8'
        : `${agg}((values ->> $2)::float8) FILTER (WHERE jsonb_typeof(values -> $2) = 'number')`
    const r = await this.pool.query(
      `SELECT ${tsToMs(`date_bin($3::int8 * interval '1 millisecond', ts, ${PG_EPOCH})`)} AS ts, ${fn} AS value
       FROM telemetry
       WHERE device_id = $1 AND values ? $2
         AND ($4::int8 IS NULL OR ts >= ${msToTs('$4::int8')}) AND ($5::int8 IS NULL OR ts < ${msToTs('$5::int8')})
       GROUP BY 1 ORDER BY 1 ${order === 'asc' ? 'ASC' : 'DESC'} LIMIT $6`,
      [deviceId, key, intervalMs, from ?? null, to ?? null, limit],
    )
    return r.rows.filter((x) => x.value !== null)
  }

  async latest(
    deviceId: string,
  ): Promise<
    { lastSeenAt: string | null; values: Record<string, { ts: number; value: unknown }> } | undefined
  > {
    const r = await this.pool.query('SELECT last_seen_at, latest FROM devices WHERE id = $1', [deviceId])
    const x = r.rows[0]
    return x ? { lastSeenAt: x.last_seen_at?.toISOString() ?? null, values: x.latest } : undefined
  }

  // ---- quarantine

  async listQuarantine(f: {
    deviceId?: string
    reason?: string
    from?: number
    to?: number
    limit: number
    offset: number
  }): Promise<QuarantineRow[]> {
    const r = await this.pool.query(
      `SELECT id::text, device_id, transport, topic, reason, detail, payload, acked, received_at, replayed_at
       FROM quarantine
       WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR reason = $2)
         AND ($3::int8 IS NULL OR received_at >= ${msToTs('$3::int8')})
         AND ($4::int8 IS NULL OR received_at < ${msToTs('$4::int8')})
       ORDER BY received_at DESC, id DESC LIMIT $5 OFFSET $6`,
      [f.deviceId ?? null, f.reason ?? null, f.from ?? null, f.to ?? null, f.limit, f.offset],
    )
    return r.rows.map(quarantineRow)
  }

  async getQuarantine(id: string): Promise<QuarantineRow | undefined> {
    if (!/^\d{1,18}$/.test(id)) return undefined
    const r = await this.pool.query(
      `SELECT id::text, device_id, transport, topic, reason, detail, payload, acked, received_at, replayed_at
       FROM quarantine WHERE id = $1`,
      [id],
    )
    return r.rows[0] ? quarantineRow(r.rows[0]) : undefined
  }

  /** Marks it replayed unless it already was; false if another replay got there first. */
  async markReplayed(id: string): Promise<boolean> {
    const r = await this.pool.query(
      'UPDATE quarantine SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL',
      [id],
    )
    return (r.rowCount ?? 0) > 0
  }

  async unmarkReplayed(id: string): Promise<void> {
    await this.pool.query('UPDATE quarantine SET replayed_at = NULL WHERE id = $1', [id])
  }
}

function deviceRow(x: Record<string, any>): DeviceRow {
  return {
    id: x.id,
    name: x.name,
    imei: x.imei,
    attributes: x.attributes,
    createdAt: x.created_at.toISOString(),
    lastSeenAt: x.last_seen_at ? x.last_seen_at.toISOString() : null,
  }
}

function quarantineRow(x: Record<string, any>): QuarantineRow {
  return {
    id: x.id,
    deviceId: x.device_id,
    transport: x.transport,
    topic: x.topic,
    reason: x.reason,
    detail: x.detail,
    payload: x.payload,
    acked: x.acked,
    receivedAt: x.received_at.toISOString(),
    replayedAt: x.replayed_at ? x.replayed_at.toISOString() : null,
  }
}
