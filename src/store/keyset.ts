import { PG_EPOCH } from './sql.js'
import { unstorable } from './text.js'

/**
 * Keyset paging, for every list the API pages: rows ordered by (time, id), a page starting after the last row
 * of the one before. Unlike OFFSET it neither skips nor repeats rows when rows are added between pages, and a
 * page costs the same wherever it is, given an index on (..., time): see each query for the one it uses.
 */

/**
 * Where a page ended, for the next page to start after: the last row's time in µs since the epoch, as text
 * (timestamptz has µs resolution, and past 2^53 µs, the year 2255, a JS number would round it), and its id, the
 * tie-breaker among rows of one time.
 */
export interface Keyset {
  at: string
  id: string
}

/** A page of a keyset scan: `next` is where the following page starts, null when the scan is exhausted. */
export interface Page<T> {
  items: T[]
  next: Keyset | null
}

export type Order = 'asc' | 'desc'

/** 9999-12-31T23:59:59.999999Z: the latest time any of our tables holds, in µs. */
const MAX_US = 253_402_300_799_999_999n
/** Ids are device ids, msgIds (at most 128 characters) and quarantine ids (digits). */
const MAX_ID_LENGTH = 256

/**
 * A keyset that came back from a client (inside a cursor) and is safe to bind: digits within timestamptz's
 * range, an id PostgreSQL can compare (no U+0000, no lone surrogate) and, where given, of the id column's form
 * (`idPattern`). Anything else would be a database error.
 */
export function isKeyset(x: unknown, idPattern?: RegExp): x is Keyset {
  if (x === null || typeof x !== 'object') return false
  const { at, id } = x as Record<string, unknown>
  return (
    typeof at === 'string' &&
    /^\d{1,18}$/.test(at) &&
    BigInt(at) <= MAX_US &&
    typeof id === 'string' &&
    id.length <= MAX_ID_LENGTH &&
    unstorable(id) === undefined &&
    (idPattern === undefined || idPattern.test(id))
  )
}

/** A timestamptz column as the exact µs text a Keyset holds. */
export const tsToUs = (col: string) => `(extract(epoch from ${col}) * 1000000)::int8::text`

/** A Keyset's µs text back as the timestamptz, exactly: seconds and µs apart, so no float product rounds. */
const usToTs = (param: string) =>
  `(${PG_EPOCH} + (${param}::int8 / 1000000) * interval '1 second' + (${param}::int8 % 1000000) * interval '1 microsecond')`

/**
 * The condition that starts a page after the keyset in `atParam`/`idParam`, for rows ordered by `time`, `id`
 * in `order`. The row comparison is the rule; the bound on `time` alone lets an index on (..., time) start at
 * the cursor on any PostgreSQL version.
 */
export function after(time: string, id: string, order: Order, atParam: string, idParam: string): string {
  const op = order === 'asc' ? '>' : '<'
  return `${time} ${op}= ${usToTs(atParam)} AND (${time}, ${id}) ${op} (${usToTs(atParam)}, ${idParam})`
}

/**
 * ORDER BY time, id, both in `order`: ties reverse with the order, so desc is asc's mirror image. Name the
 * columns with their table: a bare name in ORDER BY means an output column first, and the queries select
 * their times and ids converted (as ms, as text), which would sort differently from the keyset's comparison.
 */
export function orderBy(time: string, id: string, order: Order): string {
  const dir = order === 'asc' ? 'ASC' : 'DESC'
  return `ORDER BY ${time} ${dir}, ${id} ${dir}`
}

/**
 * Cuts the `limit + 1` rows a keyset query fetched to `limit`: the extra row tells that there is more, so the
 * last page is known to be the last without asking for an empty one.
 */
export function toPage<R extends { at: string }, T>(
  rows: R[],
  limit: number,
  id: (row: R) => string,
  item: (row: R) => T,
): Page<T> {
  const more = rows.length > limit
  const kept = more ? rows.slice(0, limit) : rows
  return {
    items: kept.map(item),
    next: more ? { at: kept[kept.length - 1].at, id: id(kept[kept.length - 1]) } : null,
  }
}
