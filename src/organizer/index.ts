import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import pg from 'pg'
import type { Logger } from 'pino'
import type { Store } from '../store/index.js'

/** The advisory lock whose holder is the one organizer across all processes sharing the database. */
const ORGANIZER_LOCK_ID = 4_171_002
/** A service that missed this many beats is reported silent. */
const SILENT_AFTER_BEATS = 3
/** Rows of services stopped or silent this long are removed. */
const FORGET_AFTER_SECONDS = 7 * 86_400

/**
 * Every process beats into `services` every check interval, so operators (and the organizer) can see which
 * gateways and ingest workers are alive.
 */
export class Heartbeat {
  readonly id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  private timer: NodeJS.Timeout | undefined
  private readonly startedAt = new Date()

  constructor(
    private readonly store: Store,
    private readonly roles: readonly string[],
    private readonly intervalSeconds: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.beat()
    this.timer = setInterval(() => {
      this.beat().catch((err) => this.log.debug({ err: err.message }, 'heartbeat not written'))
    }, this.intervalSeconds * 1000)
    this.timer.unref()
  }

  private async beat(): Promise<void> {
    await this.store.pool.query(
      `INSERT INTO services (id, roles, host, pid, started_at, beat_at) VALUES ($1, $2, $3, $4, $5, now())
       ON CONFLICT (id) DO UPDATE SET beat_at = now()`,
      [this.id, this.roles, hostname(), process.pid, this.startedAt],
    )
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.store.pool
      .query('UPDATE services SET stopped_at = now() WHERE id = $1', [this.id])
      .catch(() => {})
  }
}

/**
 * The organizer: scheduled checks that must run once across processes. Each tick it tries a PostgreSQL
 * advisory lock on its own connection; the process holding it leads until its connection ends. Today it
 * watches the services' heartbeats; data-quality rules and alerts build on this loop.
 */
export class Organizer {
  private client: pg.Client | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly silent = new Set<string>()
  leader = false

  constructor(
    private readonly store: Store,
    private readonly intervalSeconds: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.tick()
    this.timer = setInterval(() => {
      this.tick().catch((err) => this.log.warn({ err: err.message }, 'organizer tick failed'))
    }, this.intervalSeconds * 1000)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    const c = this.client
    this.client = undefined
    this.leader = false
    await c?.end().catch(() => {})
  }

  /** One round: hold or take the lock, then, as leader, run the checks. */
  async tick(): Promise<void> {
    if (!this.client) {
      const c = new pg.Client({ connectionString: this.store.url })
      c.on('error', () => {
        if (this.client === c) {
          this.client = undefined
          if (this.leader) this.log.warn('organizer lost its database connection; giving up the lead')
          this.leader = false
        }
      })
      await c.connect()
      this.client = c
    }
    if (!this.leader) {
      const r = await this.client.query('SELECT pg_try_advisory_lock($1) AS ok', [ORGANIZER_LOCK_ID])
      this.leader = r.rows[0].ok === true
      if (this.leader) this.log.info('this process leads the organizer')
    }
    if (this.leader) await this.checkServices()
  }

  private async checkServices(): Promise<void> {
    const r = await this.store.pool.query(
      `SELECT id, roles, host, pid, beat_at FROM services
       WHERE stopped_at IS NULL AND beat_at < now() - make_interval(secs => $1)`,
      [this.intervalSeconds * SILENT_AFTER_BEATS],
    )
    const now = new Set<string>()
    for (const s of r.rows) {
      now.add(s.id)
      if (!this.silent.has(s.id)) {
        this.log.warn(
          { service: s.id, roles: s.roles, host: s.host, pid: s.pid, lastBeat: s.beat_at },
          'service silent',
        )
      }
    }
    for (const id of this.silent) if (!now.has(id)) this.log.info({ service: id }, 'service beating again')
    this.silent.clear()
    for (const id of now) this.silent.add(id)
    await this.store.pool.query(
      `DELETE FROM services WHERE coalesce(stopped_at, beat_at) < now() - make_interval(secs => $1)`,
      [FORGET_AFTER_SECONDS],
    )
  }
}
