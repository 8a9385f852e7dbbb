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
  order: 'asc' | 'desc'
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
}

export interface Latest {
  lastSeenAt: string | null
  values: Record<string, Point>
}

/** Reads of stored telemetry for the API. */
export class TelemetryQueries {
  constructor(private readonly db: Db) {}

  /** The readings that carry `key`, with its value; ties on ts in msgId order. */
  async telemetry(q: RangeQuery): Promise<Point[]> {
    const r = await this.db.query(
      `SELECT ${tsToMs('ts')} AS ts, values -> $2 AS value FROM telemetry
       WHERE device_id = $1 AND values ? $2
         AND ($3::int8 IS NULL OR ts >= ${msToTs('$3::int8')}) AND ($4::int8 IS NULL OR ts < ${msToTs('$4::int8')})
       ORDER BY ts ${direction(q)}, msg_id LIMIT $5`,
      [q.deviceId, q.key, q.from ?? null, q.to ?? null, q.limit],
    )
    return r.rows
  }

  /** One point per bucket that holds a number under `key` (`count` counts every reading that has the key). */
  async aggregate(q: AggregateQuery): Promise<Point<number>[]> {
    const fn =
      q.agg === 'count'
        ? 'count(*)::float8'
        : `${q.agg}((values ->> $2)::float8) FILTER (WHERE jsonb_typeof(values -> $2) = 'number')`
    const r = await this.db.query(
      `SELECT ${tsToMs(`date_bin($3::int8 * interval '1 millisecond', ts, ${PG_EPOCH})`)} AS ts, ${fn} AS value
       FROM telemetry
       WHERE device_id = $1 AND values ? $2
         AND ($4::int8 IS NULL OR ts >= ${msToTs('$4::int8')}) AND ($5::int8 IS NULL OR ts < ${msToTs('$5::int8')})
       GROUP BY 1 ORDER BY 1 ${direction(q)} LIMIT $6`,
      [q.deviceId, q.key, q.intervalMs, q.from ?? null, q.to ?? null, q.limit],
    )
    return r.rows.filter((x) => x.value !== null)
  }

  /** The newest value of every key the device ever sent; undefined if there is no such device. */
  async latest(deviceId: string): Promise<Latest | undefined> {
    const r = await this.db.query('SELECT last_seen_at, latest FROM devices WHERE id = $1', [deviceId])
    const x = r.rows[0]
    return x ? { lastSeenAt: isoOrNull(x.last_seen_at), values: x.latest } : undefined
  }
}

/** Never interpolated from the request: the order is one of two SQL keywords. */
const direction = (q: RangeQuery) => (q.order === 'asc' ? 'ASC' : 'DESC')
