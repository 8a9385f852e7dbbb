import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import { isoOrNull, msToTs, PG_EPOCH, tsToMs } from './sql.js'

export type Aggregate = 'avg' | 'min' | 'max' | 'sum' | 'count'

/** One key of one device over [from, to) in ms since the epoch, either bound optional. */
export interface RangeQuery {
  deviceId: string
  key: string
  from?: number
  to?: number
  limit: number
  order: Order
  /** Only the readings the quality checks flagged. */
  flagged?: boolean
}

/** A page of raw points: the range, continued after `after` (a page's `next`) when given. */
export interface PointsQuery extends RangeQuery {
  after?: Keyset
}

export interface AggregateQuery extends RangeQuery {
  agg: Aggregate
  /** Bucket width; buckets start at the epoch, so they line up across queries. */
  intervalMs: number
}

export interface Point<V = unknown> {
  /** ms since the epoch */
  ts: number
  value: V
  /** The quality checks the reading failed (src/quality); absent when it passed them all. */
  flags?: string[]
}

export interface Latest {
  lastSeenAt: string | null
  values: Record<string, Point>
}

/**
 * Telemetry rows carry the device's integer key: one look-up by id, then the indexes on (device_pk, ...). The
 * flagged readings alone are served by telemetry_flagged, whose predicate the condition repeats as a literal.
 */
const range = (q: {
  flagged?: boolean
}) => `device_pk = (SELECT pk FROM devices WHERE id = $1) AND values ? $2
  AND ($3::int8 IS NULL OR ts >= ${msToTs('$3::int8')}) AND ($4::int8 IS NULL OR ts < ${msToTs('$4::int8')})
  ${q.flagged ? 'AND flags IS NOT NULL' : ''}`

/** Reads of stored telemetry for the API. */
export class TelemetryQueries {
  constructor(private readonly db: Db) {}

  /**
   * The readings that carry `key`, with its value, ordered by (ts, msgId) both ways, a page at a time. Served
   * by telemetry_device_ts (device_pk, ts): an index range scan from the cursor's ts; rows sharing one ts are
   * put in msgId order in memory (an incremental sort), so a page costs the rows of its ts group beside its
   * own (10,000 readings on one ts: 10-25 ms a page here). An index on (device_pk, ts, msg_id) would spare that, at
   * a cost to every insert.
   */
  async telemetry(q: PointsQuery): Promise<Page<Point>> {
    const params: unknown[] = [q.deviceId, q.key, q.from ?? null, q.to ?? null, q.limit + 1]
    let start = ''
    if (q.after) {
      params.push(q.after.at, q.after.id)
      start = `AND ${after('ts', 'msg_id', q.order, '$6', '$7')}`
    }
    const r = await this.db.query(
      `SELECT ${tsToMs('ts')} AS ts, values -> $2 AS value, flags, msg_id, ${tsToUs('ts')} AS at FROM telemetry
       WHERE ${range(q)} ${start}
       ${orderBy('telemetry.ts', 'telemetry.msg_id', q.order)} LIMIT $5`,
      params,
    )
    return toPage(
      r.rows,
      q.limit,
      (x) => x.msg_id,
      (x): Point =>
        x.flags === null ? { ts: x.ts, value: x.value } : { ts: x.ts, value: x.value, flags: x.flags },
    )
  }

  /**
   * One point per bucket that holds a number under `key` (`count` counts every reading that has the key).
   * Buckets without a number are left out before `limit` applies.
   */
  async aggregate(q: AggregateQuery): Promise<Point<number>[]> {
    const numbers = `FILTER (WHERE jsonb_typeof(values -> $2) = 'number')`
    const [fn, having] =
      q.agg === 'count'
        ? ['count(*)::float8', '']
        : [`${q.agg}((values ->> $2)::float8) ${numbers}`, `HAVING count(*) ${numbers} > 0`]
    const r = await this.db.query(
      `SELECT ${tsToMs(`date_bin($6::int8 * interval '1 millisecond', ts, ${PG_EPOCH})`)} AS ts, ${fn} AS value
       FROM telemetry WHERE ${range(q)}
       GROUP BY 1 ${having} ORDER BY 1 ${q.order === 'asc' ? 'ASC' : 'DESC'} LIMIT $5`,
      [q.deviceId, q.key, q.from ?? null, q.to ?? null, q.limit, q.intervalMs],
    )
    return r.rows
  }

  /**
   * The JSON type (`string`, `boolean`, `number`) of any one value of `key` in the range; undefined if no
   * reading there has the key. After an aggregate found no number, it tells what is there instead.
   */
  async someValueType(q: Omit<RangeQuery, 'limit' | 'order'>): Promise<string | undefined> {
    const r = await this.db.query(
      `SELECT jsonb_typeof(values -> $2) AS type FROM telemetry WHERE ${range(q)} LIMIT 1`,
      [q.deviceId, q.key, q.from ?? null, q.to ?? null],
    )
    return r.rows[0]?.type
  }

  /** The newest value of every key the device ever sent; undefined if there is no such device. */
  async latest(deviceId: string): Promise<Latest | undefined> {
    const r = await this.db.query('SELECT last_seen_at, latest FROM devices WHERE id = $1', [deviceId])
    const x = r.rows[0]
    return x ? { lastSeenAt: isoOrNull(x.last_seen_at), values: x.latest } : undefined
  }
}
