import pg from 'pg'
import type { Logger } from 'pino'
import { QUERY_TIMEOUT_MS } from './sql.js'

// int8 (count, bigint epoch ms) as a JS number: our values stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v))

/** Connections beyond the ingest's: API queries, heartbeats, MQTT sessions, the organizer's checks. */
const POOL_EXTRA_CONNECTIONS = 6

/**
 * The store's connections to PostgreSQL: one pool for queries and ingest batches, and dedicated clients for
 * what must hold a session of its own (LISTEN, an advisory lock). Every store module goes through it, so
 * timeouts and the handling of a lost server are decided once.
 */
export class Db {
  readonly pool: pg.Pool

  constructor(
    readonly url: string,
    private readonly log: Logger,
    poolSize: number,
  ) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: poolSize + POOL_EXTRA_CONNECTIONS,
      // Fail fast while the server is down, so the ingest backs off instead of queueing connection attempts.
      connectionTimeoutMillis: 5000,
      // A server that vanishes without closing the socket would leave a query (a ROLLBACK, a COMMIT)
      // waiting forever, and its batch with it: give up on the client instead.
      query_timeout: QUERY_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
    })
    // An idle client losing its server (a restart) must not crash the process; the pool replaces it.
    this.pool.on('error', (err) => this.log.warn({ err: err.message }, 'idle PostgreSQL connection lost'))
  }

  query<R extends pg.QueryResultRow = any>(sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(sql, params)
  }

  /**
   * A pooled client with an error listener for its checked-out time: pg emits 'error' on a client whose server
   * goes away between queries, and an unheard 'error' event would end the process. The caller releases it.
   */
  async checkout(): Promise<pg.PoolClient> {
    const client = await this.pool.connect()
    if (client.listenerCount('error') === 0)
      client.on('error', (err) => this.log.debug({ err: err.message }, 'PostgreSQL connection lost'))
    return client
  }

  /** A checked-out client for `fn` inside BEGIN ... COMMIT, rolled back if `fn` throws. */
  async transaction<T>(fn: (client: pg.ClientBase) => Promise<T>): Promise<T> {
    const client = await this.checkout()
    try {
      return await inTransaction(client, fn)
    } finally {
      client.release()
    }
  }

  /**
   * A connection outside the pool, for a session that must last (LISTEN, a session-level advisory lock),
   * connected when this resolves. `onLost` runs once if the server ends it or it fails, never after `close()`.
   */
  async dedicated(onLost: () => void): Promise<Dedicated> {
    const client = new pg.Client({ connectionString: this.url, query_timeout: QUERY_TIMEOUT_MS })
    let armed = false
    const lost = () => {
      if (!armed) return
      armed = false
      client.end().catch(() => {})
      onLost()
    }
    // Listening from the start also keeps an 'error' while connecting from ending the process.
    client.on('error', lost)
    client.on('end', lost)
    try {
      await client.connect()
    } catch (err) {
      client.end().catch(() => {})
      throw err
    }
    armed = true
    return {
      client,
      close: async () => {
        armed = false
        await client.end().catch(() => {})
      },
    }
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1')
  }

  async end(): Promise<void> {
    await this.pool.end()
  }
}

export interface Dedicated {
  readonly client: pg.Client
  /** Ends the connection; the session's locks and LISTENs end with it. */
  close(): Promise<void>
}

/** `fn` inside BEGIN ... COMMIT on this client, rolled back if it throws. */
export async function inTransaction<T>(
  client: pg.ClientBase,
  fn: (client: pg.ClientBase) => Promise<T>,
): Promise<T> {
  await client.query('BEGIN')
  try {
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}
