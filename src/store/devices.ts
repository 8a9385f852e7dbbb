import { IotError } from '../errors.js'
import {
  after as afterKeyset,
  type Keyset,
  type Order,
  orderBy,
  type Page,
  toPage,
  tsToUs,
} from './keyset.js'
import type pg from 'pg'
import type { Db } from './pool.js'
import { apiRow } from './sql.js'

export interface DeviceRow {
  id: string
  name: string
  imei: string | null
  attributes: Record<string, unknown>
  createdAt: string
  lastSeenAt: string | null
  /** Set once the device is retired (DELETE with data=keep): its telemetry stays, its credentials are gone. */
  retiredAt: string | null
}

/** Which devices a list shows: live ones (the default), retired ones too, or only those. */
export type RetiredFilter = 'exclude' | 'include' | 'only'

/** What retiring a device found. */
export type RetireResult = 'retired' | 'already retired' | 'missing'

/** What a gateway needs to authenticate a device. */
export interface Credential {
  id: string
  tokenHash: string
  imei: string | null
}

export interface NewDevice {
  id: string
  name: string
  imei?: string
  tokenHash: string
  attributes?: Record<string, unknown>
}

const DEVICE_COLUMNS =
  'id, name, imei, attributes, created_at AS "createdAt", last_seen_at AS "lastSeenAt", retired_at AS "retiredAt"'
const CREDENTIAL_COLUMNS = 'id, token_hash AS "tokenHash", imei'
const LIVE = 'retired_at IS NULL'
const RETIRED_WHERE: Record<RetiredFilter, string | null> = {
  exclude: LIVE,
  include: null,
  only: 'retired_at IS NOT NULL',
}

/**
 * The live devices (not retired, not deleted) among `ids`, each with its integer key (devices.pk, the device
 * column of `telemetry`), locking their rows FOR KEY SHARE until the transaction on `client` ends. For the
 * ingest's batch transaction, run first: a device retired or deleted before it cannot be written for, and a
 * retire or delete that comes after waits for its commit (both take the row FOR UPDATE or delete it, which
 * conflict with KEY SHARE), so a reading is either stored before the device went or never. KEY SHARE, not
 * SHARE: the batch's own UPDATE of `latest` takes FOR NO KEY UPDATE, which SHARE held by a concurrent batch
 * would block, deadlocking the two. Sorted, so batches lock in one order.
 */
export async function lockLiveDevices(
  client: pg.ClientBase,
  ids: readonly string[],
): Promise<Map<string, number>> {
  const r = await client.query(
    `SELECT id, pk FROM devices WHERE id = ANY($1::text[]) AND ${LIVE} ORDER BY id FOR KEY SHARE`,
    [ids],
  )
  // Number(): int8 is a number only where pool.ts set its parser; an identity stays far below 2^53.
  return new Map(r.rows.map((x) => [x.id as string, Number(x.pk)]))
}

/** The `devices` table: the registry, and the credentials the gateways check. */
export class DeviceStore {
  constructor(private readonly db: Db) {}

  /** Throws IOT_ERR_DEVICE_CONFLICT (detail `id` or `imei`) when either is taken. */
  async create(d: NewDevice): Promise<DeviceRow> {
    try {
      const r = await this.db.query(
        `INSERT INTO devices (id, name, imei, token_hash, attributes) VALUES ($1, $2, $3, $4, $5)
         RETURNING ${DEVICE_COLUMNS}`,
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

  /**
   * A page of devices in creation order (ties by id), `after` a page's `next`; live ones unless `retired` says
   * otherwise. Served by devices_created (created_at, id).
   */
  async list(
    limit: number,
    order: Order,
    after?: Keyset,
    retired: RetiredFilter = 'exclude',
  ): Promise<Page<DeviceRow>> {
    const params: unknown[] = [limit + 1]
    const where: string[] = []
    const state = RETIRED_WHERE[retired]
    if (state) where.push(state)
    if (after) {
      params.push(after.at, after.id)
      where.push(afterKeyset('created_at', 'id', order, '$2', '$3'))
    }
    const r = await this.db.query(
      `SELECT ${DEVICE_COLUMNS}, ${tsToUs('created_at')} AS at FROM devices
       ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ${orderBy('devices.created_at', 'devices.id', order)} LIMIT $1`,
      params,
    )
    return toPage(r.rows, limit, (x) => x.id, deviceRow)
  }

  /** A live or retired device. */
  async get(id: string): Promise<DeviceRow | undefined> {
    const r = await this.db.query(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1`, [id])
    return r.rows[0] ? deviceRow(r.rows[0]) : undefined
  }

  /**
   * Sets what `patch` holds; undefined if there is no such device. The quality checks read a device's
   * attributes (rule groups, the resend capability) with each batch, so the change takes effect with the next.
   */
  async update(
    id: string,
    patch: { name?: string; attributes?: Record<string, unknown> },
  ): Promise<DeviceRow | undefined> {
    const r = await this.db.query(
      `UPDATE devices SET name = COALESCE($2, name), attributes = COALESCE($3::jsonb, attributes)
       WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
      [id, patch.name ?? null, patch.attributes ?? null],
    )
    return r.rows[0] ? deviceRow(r.rows[0]) : undefined
  }

  /**
   * Removes the device (live or retired), its telemetry and its MQTT sessions together; false if there was no
   * such device. The device row goes first: that waits for any ingest batch holding it (lockLiveDevices), and
   * the telemetry delete that follows sees what that batch stored.
   */
  async delete(id: string): Promise<boolean> {
    return this.db.transaction(async (c) => {
      const r = await c.query('DELETE FROM devices WHERE id = $1 RETURNING pk', [id])
      const gone = r.rows.length > 0
      if (gone) await c.query('DELETE FROM telemetry WHERE device_pk = $1', [r.rows[0].pk])
      await c.query('DELETE FROM mqtt_sessions WHERE device_id = $1', [id])
      return gone
    })
  }

  /**
   * Retires the device: its credentials are revoked (no token hashes to NULL, and the credential queries skip
   * it), its MQTT sessions end, its row and telemetry stay. FOR UPDATE waits for any ingest batch holding the
   * row (lockLiveDevices) and makes later ones see it retired.
   */
  async retire(id: string): Promise<RetireResult> {
    return this.db.transaction(async (c) => {
      const r = await c.query(
        'SELECT retired_at IS NOT NULL AS retired FROM devices WHERE id = $1 FOR UPDATE',
        [id],
      )
      if (r.rows.length === 0) return 'missing'
      if (r.rows[0].retired) return 'already retired'
      await c.query('UPDATE devices SET retired_at = now(), token_hash = NULL WHERE id = $1', [id])
      await c.query('DELETE FROM mqtt_sessions WHERE device_id = $1', [id])
      return 'retired'
    })
  }

  /** False if there is no such live device. */
  async setTokenHash(id: string, tokenHash: string): Promise<boolean> {
    const r = await this.db.query(`UPDATE devices SET token_hash = $2 WHERE id = $1 AND ${LIVE}`, [
      id,
      tokenHash,
    ])
    return (r.rowCount ?? 0) > 0
  }

  /** Which of `ids` are live devices, without locking (see lockLiveDevices for the ingest's transaction). */
  async live(ids: readonly string[]): Promise<Set<string>> {
    const r = await this.db.query(`SELECT id FROM devices WHERE id = ANY($1::text[]) AND ${LIVE}`, [ids])
    return new Set(r.rows.map((x) => x.id as string))
  }

  /** The credentials of every live device. */
  async credentials(): Promise<Credential[]> {
    const r = await this.db.query(`SELECT ${CREDENTIAL_COLUMNS} FROM devices WHERE ${LIVE}`)
    return r.rows
  }

  /** A live device's credential; undefined for a retired or missing one. */
  async credential(id: string): Promise<Credential | undefined> {
    const r = await this.db.query(`SELECT ${CREDENTIAL_COLUMNS} FROM devices WHERE id = $1 AND ${LIVE}`, [id])
    return r.rows[0]
  }
}

const deviceRow = (x: Record<string, any>) => apiRow<DeviceRow>(x, ['createdAt', 'lastSeenAt', 'retiredAt'])
