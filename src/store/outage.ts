/**
 * Whose fault a PostgreSQL error is: the one answer for every caller (the start waiting for its database, the
 * ingest deciding between retry and quarantine).
 * - `outage`: the server is away, restarting, out of resources or refusing work for now. Never the data's
 *   fault: retry with backoff, however many times.
 * - `data`: the server refused these rows. Retrying them cannot help; find the culprit and quarantine it.
 * - `other`: anything else (a bug, a permission or schema problem, a wrong password). Fatal at start; the
 *   ingest retries it a few times before it treats the messages as poison.
 *
 * SQLSTATE classes: https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export type PgFault = 'outage' | 'data' | 'other'

/**
 * 08 connection exception, 40 transaction rollback (serialization failure, deadlock), 53 insufficient
 * resources, 57 operator intervention (admin or crash shutdown, cannot connect now, query cancelled), 58 system
 * error (I/O), XX internal error.
 */
const OUTAGE_CLASSES = /^(08|40|53|57|58|XX)/
/**
 * 22 data exception, 23 integrity constraint violation, 54 program limit exceeded. A unique violation (23505)
 * is not one: the writes dedup on conflict, so one reaching us is a bug, not a bad row.
 */
const DATA_CLASSES = /^(22|23|54)/
/**
 * Node's system errors (ECONNREFUSED, ECONNRESET, ETIMEDOUT, ENOTFOUND, EAI_AGAIN...), not its ERR_* codes,
 * which are bugs.
 */
const SYSTEM_ERROR = /^E(?!RR_)[A-Z_]+$/
/**
 * pg reports a dropped connection or a pool or query timeout with no code ("Connection terminated
 * unexpectedly", "timeout exceeded when trying to connect", "Query read timeout"), and so does a batch
 * deadline.
 */
const CODELESS_OUTAGE = /connect|terminat|timeout|timed out|closed/i

export function pgFault(err: unknown): PgFault {
  const code = (err as { code?: unknown } | null | undefined)?.code
  if (typeof code === 'string') {
    if (OUTAGE_CLASSES.test(code) || SYSTEM_ERROR.test(code)) return 'outage'
    if (DATA_CLASSES.test(code) && code !== '23505') return 'data'
    return 'other'
  }
  return CODELESS_OUTAGE.test((err as Error | null | undefined)?.message ?? '') ? 'outage' : 'other'
}
