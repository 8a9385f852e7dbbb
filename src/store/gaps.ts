import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import { ON_DUE_CONFLICT, UPSERT_DUE } from './rules.js'
import { apiRow } from './sql.js'

/** A gap in a device's sequence numbers, as the API shows it. */
export interface GapRow {
  id: string
  /** The first and last seq missing when the gap was found. */
  from: number
  to: number
  /** What has still not arrived, as inclusive ranges; empty once all of it came. */
  missing: Array<[number, number]>
  missingCount: number
  status: 'open' | 'closed'
  openedAt: string
  closedAt: string | null
  /** When its `sequence_gap` alert was wanted, having stayed open past IOTCORE_GAP_ALERT_AFTER. */
  alertedAt: string | null
}

export type GapStatus = 'open' | 'closed' | 'all'

export interface GapFilter {
  deviceId: string
  status: GapStatus
  limit: number
  /** By time opened, ties by id: desc is newest first. */
  order: Order
  after?: Keyset
}

/** Gap ids are an identity: a keyset's id is digits. */
export const GAP_ID = /^\d{1,18}$/

const STATUS_WHERE: Record<GapStatus, string> = {
  open: 'AND closed_at IS NULL',
  closed: 'AND closed_at IS NOT NULL',
  all: '',
}

/** Sum of a flattened-ranges column's lengths. */
const MISSING_COUNT = (col: string) =>
  `(SELECT coalesce(sum(${col}[2 * i] - ${col}[2 * i - 1] + 1), 0) FROM generate_series(1, cardinality(${col}) / 2) AS i)::int8`

/** Sequence gaps (the ingest finds and closes them, in src/quality), for the API and the overdue sweep. */
export class GapStore {
  constructor(private readonly db: Db) {}

  /** A page of the device's gaps; served by sequence_gaps_device (device_pk, opened_at, id). */
  async list(f: GapFilter): Promise<Page<GapRow>> {
    const params: unknown[] = [f.deviceId, f.limit + 1]
    let start = ''
    if (f.after) {
      params.push(f.after.at, f.after.id)
      start = `AND ${after('opened_at', 'id', f.order, '$3', '$4::int8')}`
    }
    const r = await this.db.query(
      `SELECT id::text, first_seq AS "from", last_seq AS "to", missing, opened_at AS "openedAt",
              closed_at AS "closedAt", alerted_at AS "alertedAt", ${tsToUs('opened_at')} AS at
       FROM sequence_gaps WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ${STATUS_WHERE[f.status]} ${start}
       ${orderBy('sequence_gaps.opened_at', 'sequence_gaps.id', f.order)} LIMIT $2`,
      params,
    )
    return toPage(r.rows, f.limit, (x) => x.id, gapRow)
  }

  /**
   * Wants a `sequence_gap` alert (device_alerts_due) for every device with a gap open for `afterSeconds` or
   * more that none was wanted for yet, with all its overdue gaps in the details; marks those gaps alerted.
   * Under the devices' row locks, as the ingest's batches judge them, so a batch closing a gap and this
   * marking it never cross. Returns how many alerts it wanted.
   */
  async raiseOverdue(afterSeconds: number, severity: string): Promise<number> {
    const overdue = (g: string, seconds: string) =>
      `${g}closed_at IS NULL AND ${g}opened_at <= now() - ${seconds}::int8 * interval '1 second'`
    const found = await this.db.query(
      `SELECT DISTINCT device_pk AS pk FROM sequence_gaps WHERE ${overdue('', '$1')} AND alerted_at IS NULL`,
      [afterSeconds],
    )
    if (found.rows.length === 0) return 0
    const pks = found.rows.map((x) => x.pk)
    return this.db.transaction(async (c) => {
      await c.query('SELECT 1 FROM devices WHERE pk = ANY($1::int8[]) ORDER BY id FOR NO KEY UPDATE', [pks])
      const r = await c.query(
        `WITH marked AS (UPDATE sequence_gaps SET alerted_at = now()
                         WHERE device_pk = ANY($1::int8[]) AND ${overdue('', '$2')} AND alerted_at IS NULL RETURNING device_pk)
         ${UPSERT_DUE}
         SELECT x.pk, 'sequence_gap', true, $3,
           (SELECT jsonb_build_object('afterSeconds', $2::int8, 'gaps', jsonb_agg(jsonb_build_object(
                     'from', g.first_seq, 'to', g.last_seq, 'missing', ${MISSING_COUNT('g.missing')},
                     'openedAt', g.opened_at) ORDER BY g.first_seq))
            FROM sequence_gaps g WHERE g.device_pk = x.pk AND ${overdue('g.', '$2')}),
           now()
         FROM (SELECT DISTINCT device_pk AS pk FROM marked) AS x
         ${ON_DUE_CONFLICT} RETURNING 1`,
        [pks, afterSeconds, severity],
      )
      return r.rows.length
    })
  }
}

function gapRow(x: Record<string, any>): GapRow {
  // int8[] comes as strings (pg parses only scalar int8 to numbers, pool.ts).
  const missing = (x.missing as string[]).map(Number)
  const row = apiRow<Omit<GapRow, 'missing' | 'missingCount' | 'status'>>(x, [
    'openedAt',
    'closedAt',
    'alertedAt',
  ])
  const pairs: Array<[number, number]> = []
  let count = 0
  for (let i = 0; i + 1 < missing.length; i += 2) {
    pairs.push([missing[i], missing[i + 1]])
    count += missing[i + 1] - missing[i] + 1
  }
  return {
    ...row,
    missing: pairs,
    missingCount: count,
    status: row.closedAt === null ? 'open' : 'closed',
  }
}
