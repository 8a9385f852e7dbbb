import { after as afterKeyset, type Keyset, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import type { Point } from './queries.js'
import { apiRow, msToTs, PG_EPOCH, tsToMs } from './sql.js'

/** A live device as the console's list and map show it: the registry row and its latest value per key. */
export interface FleetRow {
  id: string
  name: string
  imei: string | null
  createdAt: string
  lastSeenAt: string | null
  latest: Record<string, Point>
}

/** Several keys of one device over [from, to), bucketed: one scan for all keys. */
export interface SeriesQuery {
  deviceId: string
  keys: readonly string[]
  from: number
  to: number
  intervalMs: number
}

/** Columns aligned on `ts` (a chart's data as is); null where a bucket holds no number under the key. */
export interface Series {
  ts: number[]
  keys: Record<string, { avg: Array<number | null>; min: Array<number | null>; max: Array<number | null> }>
}

const FLEET_COLUMNS = 'id, name, imei, created_at AS "createdAt", last_seen_at AS "lastSeenAt", latest'
const fleetRow = (x: Record<string, any>) => apiRow<FleetRow>(x, ['createdAt', 'lastSeenAt'])

/** The reads of the web console: the whole fleet a page at a time, and charts' series. */
export class ConsoleQueries {
  constructor(private readonly db: Db) {}

  /** Live devices with their latest values, in creation order (ties by id), served by devices_created. */
  async fleet(limit: number, after?: Keyset): Promise<Page<FleetRow>> {
    const params: unknown[] = [limit + 1]
    let start = ''
    if (after) {
      params.push(after.at, after.id)
      start = `AND ${afterKeyset('created_at', 'id', 'asc', '$2', '$3')}`
    }
    const r = await this.db.query(
      `SELECT ${FLEET_COLUMNS}, ${tsToUs('created_at')} AS at FROM devices
       WHERE retired_at IS NULL ${start} ${orderBy('devices.created_at', 'devices.id', 'asc')} LIMIT $1`,
      params,
    )
    return toPage(r.rows, limit, (x) => x.id, fleetRow)
  }

  /** The live devices among `ids`, as `fleet` has them; a retired or deleted one is left out. */
  async fleetRows(ids: readonly string[]): Promise<FleetRow[]> {
    const r = await this.db.query(
      `SELECT ${FLEET_COLUMNS} FROM devices WHERE id = ANY($1::text[]) AND retired_at IS NULL`,
      [ids],
    )
    return r.rows.map(fleetRow)
  }

  /**
   * avg, min and max of each key's numbers per bucket (buckets start at the epoch, as the API's aggregates do),
   * in one scan of the device's rows whatever the number of keys. Buckets with no number under any key are left
   * out. A week of one-second readings is 604,800 rows, so each row's jsonb is read once per key: in the inner
   * subquery, then typed in the middle one, each kept apart by OFFSET 0 (merged into the aggregates, every
   * aggregate would read the jsonb again: 3.3x the CPU, measured). The few groups are then hashed in memory.
   */
  async series(q: SeriesQuery): Promise<Series> {
    const reads: string[] = []
    const numbers: string[] = []
    const aggs: string[] = []
    const any: string[] = []
    q.keys.forEach((_, i) => {
      reads.push(`values -> $${i + 5} AS v${i}`)
      numbers.push(`CASE WHEN jsonb_typeof(v${i}) = 'number' THEN v${i}::float8 END AS x${i}`)
      aggs.push(`avg(x${i}), min(x${i}), max(x${i})`)
      any.push(`count(x${i})`)
    })
    const r = await this.db.pool.query({
      text: `SELECT ${tsToMs('b')} AS ts, ${aggs.join(', ')}
        FROM (SELECT b, ${numbers.join(', ')}
              FROM (SELECT date_bin($4::int8 * interval '1 millisecond', ts, ${PG_EPOCH}) AS b, ${reads.join(', ')}
                    FROM telemetry
                    WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)
                      AND ts >= ${msToTs('$2::int8')} AND ts < ${msToTs('$3::int8')}
                    OFFSET 0) AS v
              OFFSET 0) AS x
        GROUP BY b HAVING ${any.join(' + ')} > 0 ORDER BY b`,
      values: [q.deviceId, q.from, q.to, q.intervalMs, ...q.keys],
      // Rows as arrays: the columns are positional, one triple per key.
      rowMode: 'array',
    })
    return columns(q.keys, r.rows as unknown[][], 3)
  }

  /**
   * A quick look at the same range: each bucket's first reading (its number under each key, or null), found by
   * one probe of telemetry_device_ts per bucket, whatever the rows in it: ~1,000 index probes instead of a scan
   * of 604,800 rows for a week of one-second readings. Not an aggregate: a chart shows it until the series
   * arrives. Buckets with no reading are left out.
   */
  async sample(q: SeriesQuery): Promise<Series> {
    const numbers = q.keys.map(
      (_, i) =>
        `CASE WHEN jsonb_typeof(values -> $${i + 5}) = 'number' THEN (values -> $${i + 5})::float8 END`,
    )
    const r = await this.db.pool.query({
      text: `SELECT g.b AS ts, ${numbers.join(', ')}
        FROM generate_series($2::int8, $3::int8 - 1, $4::int8) AS g(b)
        CROSS JOIN LATERAL (
          SELECT values FROM telemetry
          WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)
            AND ts >= ${msToTs('g.b')} AND ts < ${msToTs('(g.b + $4::int8)')}
          ORDER BY ts LIMIT 1) AS t
        ORDER BY g.b`,
      // Buckets start at the epoch, as the series' do.
      values: [q.deviceId, Math.floor(q.from / q.intervalMs) * q.intervalMs, q.to, q.intervalMs, ...q.keys],
      rowMode: 'array',
    })
    return columns(q.keys, r.rows as unknown[][], 1)
  }
}

/**
 * Rows as [ts, then `per` numbers per key] into aligned columns; with one number per key (a sample), it is
 * the avg, min and max alike.
 */
function columns(keys: readonly string[], rows: unknown[][], per: 1 | 3): Series {
  const out: Series = { ts: [], keys: Object.create(null) }
  const cells = keys.map((k) => {
    const cell: Series['keys'][string] = { avg: [], min: [], max: [] }
    out.keys[k] = cell
    return cell
  })
  for (const row of rows) {
    out.ts.push(row[0] as number)
    for (let i = 0; i < cells.length; i++) {
      const at = 1 + per * i
      cells[i].avg.push(row[at] as number | null)
      cells[i].min.push(row[per === 3 ? at + 1 : at] as number | null)
      cells[i].max.push(row[per === 3 ? at + 2 : at] as number | null)
    }
  }
  return out
}
