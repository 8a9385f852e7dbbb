import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import { Backoff, pause } from '../lib/backoff.js'
import type { Component, Health } from '../lib/component.js'
import { EmbeddedDatabase } from './embedded.js'
import { Store } from './index.js'
import { pgFault } from './outage.js'
import { withDeadline } from '../lib/deadline.js'

/** How long a start waits for an unreachable DATABASE_URL before giving up. */
const START_WAIT_MS = 5 * 60_000
/** Retries of an unreachable database at start: capped so a server that comes back is found within seconds. */
const RETRY_MIN_MS = 250
const RETRY_MAX_MS = 5000
/** /readyz gives the database this long to answer before calling it down. */
const PING_TIMEOUT_MS = 2000

export interface OpenedStore {
  store: Store
  /** The PostgreSQL server this process runs when DATABASE_URL is unset. */
  embedded?: EmbeddedDatabase
}

/**
 * Opens the database: the one at DATABASE_URL, or an embedded server in the data dir, then migrates it. A
 * DATABASE_URL that is down (an outage, not a refusal such as a wrong password) is waited for, so a process
 * restarted during an outage comes up with its database; an aborted `signal` ends the wait.
 */
export async function openStore(config: Config, log: Logger, signal?: AbortSignal): Promise<OpenedStore> {
  let url = config.databaseUrl
  let embedded: EmbeddedDatabase | undefined
  if (!url) {
    embedded = new EmbeddedDatabase(config.dataDir, log.child({ component: 'postgres' }))
    url = await embedded.start()
  }
  const store = new Store(url, log.child({ component: 'store' }), config.ingestConcurrency)
  const backoff = new Backoff(RETRY_MIN_MS, RETRY_MAX_MS)
  const giveUpAt = Date.now() + START_WAIT_MS
  for (;;) {
    try {
      await store.start()
      return { store, embedded }
    } catch (err) {
      // An embedded server that fails is broken, not away: no wait helps it.
      if (embedded || pgFault(err) !== 'outage' || Date.now() >= giveUpAt || signal?.aborted) {
        await store.stop().catch(() => {})
        await embedded?.stop()
        throw err
      }
      if (backoff.failures === 0) log.warn({ err: (err as Error).message }, 'waiting for PostgreSQL')
      await pause(backoff.next(), signal)
    }
  }
}

/** The database as a component: opened first, closed last (the store's pool, then the embedded server). */
export class Database implements Component {
  readonly name = 'database'
  private opening: Promise<OpenedStore> | undefined
  private readonly abort = new AbortController()

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  /** The open store; set once start() resolved. */
  store!: Store

  async start(): Promise<void> {
    this.opening = openStore(this.config, this.log, this.abort.signal)
    this.store = (await this.opening).store
  }

  async stop(): Promise<void> {
    // A start still waiting for the server gives up at once; one opening the embedded server finishes first.
    this.abort.abort()
    const opened = await this.opening?.catch(() => undefined)
    if (!opened) return
    await opened.store.stop().catch((err) => this.log.warn({ err: err.message }, 'closing the pool'))
    await opened.embedded?.stop()
  }

  async health(): Promise<Health> {
    if (!this.store) return { ok: false, detail: 'not open yet' }
    try {
      await withDeadline(this.store.ping(), PING_TIMEOUT_MS, 'no answer in time')
      return { ok: true }
    } catch (err) {
      return { ok: false, detail: (err as Error).message }
    }
  }
}
