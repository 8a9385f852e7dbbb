import type { Db } from './pool.js'
import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import { apiRow, msToTs } from './sql.js'
import type { QuarantineInsert } from './telemetry-write.js'

/** A quarantined message as stored (the ingest writes them, see telemetry-write.ts). */
export interface QuarantineRow extends Omit<QuarantineInsert, 'sourceId' | 'receivedAt'> {
  id: string
  receivedAt: string
  replayedAt: string | null
}

export interface QuarantineFilter {
  deviceId?: string
  reason?: string
  /** received at or after, ms since the epoch */
  from?: number
  /** received before, ms since the epoch */
  to?: number
  limit: number
  /** By time received, ties by id: desc is newest first. */
  order: Order
  /** Continue after this row (a page's `next`). */
  after?: Keyset
}

/** Quarantine ids are a bigserial: a keyset's id is digits. */
export const QUARANTINE_ID = /^\d{1,18}$/

const COLUMNS = `id::text, device_id AS "deviceId", transport, topic, reason, detail, payload, acked,
  received_at AS "receivedAt", replayed_at AS "replayedAt", ${tsToUs('received_at')} AS at`

/** Reading the quarantine and marking replays, for the API. */
export class QuarantineStore {
  constructor(private readonly db: Db) {}

  /**
   * A page of quarantined messages. The planner picks among quarantine_received (received_at, id), which
   * serves any filter in order, and quarantine_device (device_id, received_at) or quarantine_reason (reason,
   * received_at) when their filter is selective; rows received at one instant (the bad readings of one array)
   * are then put in id order in memory.
   */
  async list(f: QuarantineFilter): Promise<Page<QuarantineRow>> {
    const params: unknown[] = [
      f.deviceId ?? null,
      f.reason ?? null,
      f.from ?? null,
      f.to ?? null,
      f.limit + 1,
    ]
    let start = ''
    if (f.after) {
      params.push(f.after.at, f.after.id)
      start = `AND ${after('received_at', 'id', f.order, '$6', '$7::int8')}`
    }
    const r = await this.db.query(
      `SELECT ${COLUMNS} FROM quarantine
       WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR reason = $2)
         AND ($3::int8 IS NULL OR received_at >= ${msToTs('$3::int8')})
         AND ($4::int8 IS NULL OR received_at < ${msToTs('$4::int8')}) ${start}
       ${orderBy('quarantine.received_at', 'quarantine.id', f.order)} LIMIT $5`,
      params,
    )
    return toPage(r.rows, f.limit, (x) => x.id, quarantineRow)
  }

  /** Undefined for an unknown id, or one that is not an id at all. */
  async get(id: string): Promise<QuarantineRow | undefined> {
    if (!/^\d{1,18}$/.test(id)) return undefined
    const r = await this.db.query(`SELECT ${COLUMNS} FROM quarantine WHERE id = $1`, [id])
    return r.rows[0] ? quarantineRow(r.rows[0]) : undefined
  }

  /** Marks it replayed unless it already was; false if another replay got there first. */
  async markReplayed(id: string): Promise<boolean> {
    const r = await this.db.query(
      'UPDATE quarantine SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL',
      [id],
    )
    return (r.rowCount ?? 0) > 0
  }

  /** Undoes markReplayed when the replay could not be queued, so it can be tried again. */
  async unmarkReplayed(id: string): Promise<void> {
    await this.db.query('UPDATE quarantine SET replayed_at = NULL WHERE id = $1', [id])
  }
}

const quarantineRow = (x: Record<string, any>) => apiRow<QuarantineRow>(x, ['receivedAt', 'replayedAt'])
