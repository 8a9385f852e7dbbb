import type { Db } from './pool.js'
import { isoOrNull, msToTs } from './sql.js'
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
  offset: number
}

const COLUMNS = `id::text, device_id AS "deviceId", transport, topic, reason, detail, payload, acked,
  received_at AS "receivedAt", replayed_at AS "replayedAt"`

/** Reading the quarantine and marking replays, for the API. */
export class QuarantineStore {
  constructor(private readonly db: Db) {}

  /** Newest first. */
  async list(f: QuarantineFilter): Promise<QuarantineRow[]> {
    const r = await this.db.query(
      `SELECT ${COLUMNS} FROM quarantine
       WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR reason = $2)
         AND ($3::int8 IS NULL OR received_at >= ${msToTs('$3::int8')})
         AND ($4::int8 IS NULL OR received_at < ${msToTs('$4::int8')})
       ORDER BY received_at DESC, id DESC LIMIT $5 OFFSET $6`,
      [f.deviceId ?? null, f.reason ?? null, f.from ?? null, f.to ?? null, f.limit, f.offset],
    )
    return r.rows.map(quarantineRow)
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

function quarantineRow(x: Record<string, any>): QuarantineRow {
  return {
    ...x,
    receivedAt: x.receivedAt.toISOString(),
    replayedAt: isoOrNull(x.replayedAt),
  } as QuarantineRow
}
