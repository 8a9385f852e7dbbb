/** SQL fragments and limits shared by the store's modules. */

/** Longest any one statement may take from the client's side; a 5,000-row batch takes ~0.1 s. */
export const QUERY_TIMEOUT_MS = 30_000
/** COPY is not covered by the client's query_timeout, so it gets the same deadline of its own. */
export const COPY_TIMEOUT_MS = QUERY_TIMEOUT_MS

export const PG_EPOCH = `'epoch'::timestamptz`
/** A timestamptz from an int8 column or parameter holding ms since the epoch. */
export const msToTs = (col: string) => `(${PG_EPOCH} + ${col} * interval '1 millisecond')`
/** ms since the epoch (int8) from a timestamptz. */
export const tsToMs = (col: string) => `(extract(epoch from ${col}) * 1000)::int8`
/** A nullable timestamptz as the API shows it. */
export const isoOrNull = (d: Date | null): string | null => d?.toISOString() ?? null

/**
 * A row as the API shows it: the keyset column `at` (paging only) left out, the named timestamptz columns as
 * ISO strings (null stays null).
 */
export function apiRow<T>(x: Record<string, any>, times: readonly string[]): T {
  const { at: _, ...row } = x
  for (const k of times) row[k] = isoOrNull(x[k])
  return row as T
}

/**
 * PostgreSQL advisory lock ids, one per thing that runs once across processes. Never renumber one: processes
 * of two versions may share a database during an upgrade.
 */
export const LOCK_IDS = {
  /** Held while migrating, so processes starting at once apply each migration once. */
  migrations: 4_171_001,
  /** Held by the one organizer across processes. */
  organizer: 4_171_002,
  /** Taken by a transaction that writes events, until it ends: event ids are committed in id order. */
  events: 4_171_003,
} as const
