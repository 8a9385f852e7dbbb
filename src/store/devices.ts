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
import type { Db } from './pool.js'
import { isoOrNull } from './sql.js'

export interface DeviceRow {
  id: string
  name: string
  imei: string | null
  attributes: Record<string, unknown>
  createdAt: string
  lastSeenAt: string | null
}

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

const DEVICE_COLUMNS = 'id, name, imei, attributes, created_at AS "createdAt", last_seen_at AS "lastSeenAt"'
const CREDENTIAL_COLUMNS = 'id, token_hash AS "tokenHash", imei'

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
   * A page of devices in creation order (ties by id), `after` a page's `next`. Served by devices_created
   * (created_at, id).
   */
  async list(limit: number, order: Order, after?: Keyset): Promise<Page<DeviceRow>> {
    const params: unknown[] = [limit + 1]
    let start = ''
    if (after) {
      params.push(after.at, after.id)
      start = `WHERE ${afterKeyset('created_at', 'id', order, '$2', '$3')}`
    }
    const r = await this.db.query(
      `SELECT ${DEVICE_COLUMNS}, ${tsToUs('created_at')} AS at FROM devices ${start}
       ${orderBy('devices.created_at', 'devices.id', order)} LIMIT $1`,
      params,
    )
    return toPage(r.rows, limit, (x) => x.id, deviceRow)
  }

  async get(id: string): Promise<DeviceRow | undefined> {
    const r = await this.db.query(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1`, [id])
    return r.rows[0] ? deviceRow(r.rows[0]) : undefined
  }

  /** Removes the device and its telemetry together; false if there was no such device. */
  async delete(id: string): Promise<boolean> {
    return this.db.transaction(async (c) => {
      const r = await c.query('DELETE FROM devices WHERE id = $1', [id])
      await c.query('DELETE FROM telemetry WHERE device_id = $1', [id])
      return (r.rowCount ?? 0) > 0
    })
  }

  /** False if there is no such device. */
  async setTokenHash(id: string, tokenHash: string): Promise<boolean> {
    const r = await this.db.query('UPDATE devices SET token_hash = $2 WHERE id = $1', [id, tokenHash])
    return (r.rowCount ?? 0) > 0
  }

  async credentials(): Promise<Credential[]> {
    const r = await this.db.query(`SELECT ${CREDENTIAL_COLUMNS} FROM devices`)
    return r.rows
  }

  async credential(id: string): Promise<Credential | undefined> {
    const r = await this.db.query(`SELECT ${CREDENTIAL_COLUMNS} FROM devices WHERE id = $1`, [id])
    return r.rows[0]
  }
}

function deviceRow(x: Record<string, any>): DeviceRow {
  const { at: _, ...row } = x
  return { ...row, createdAt: x.createdAt.toISOString(), lastSeenAt: isoOrNull(x.lastSeenAt) } as DeviceRow
}
