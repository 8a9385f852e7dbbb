import type { Db, Dedicated } from './pool.js'
import { isoOrNull, LOCK_IDS } from './sql.js'

/** An iotcore process as it announces itself in `services`. */
export interface ServiceBeat {
  id: string
  roles: readonly string[]
  host: string
  pid: number
  startedAt: Date
}

export interface ServiceRow {
  id: string
  roles: string[]
  host: string
  pid: number
  startedAt: string
  beatAt: string
  stoppedAt: string | null
}

const COLUMNS = `id, roles, host, pid, started_at AS "startedAt", beat_at AS "beatAt", stopped_at AS "stoppedAt"`

/** `services`: every process's heartbeat, and the organizer's lock and housekeeping. */
export class ServiceStore {
  constructor(private readonly db: Db) {}

  async beat(s: ServiceBeat): Promise<void> {
    await this.db.query(
      `INSERT INTO services (id, roles, host, pid, started_at, beat_at) VALUES ($1, $2, $3, $4, $5, now())
       ON CONFLICT (id) DO UPDATE SET beat_at = now()`,
      [s.id, s.roles, s.host, s.pid, s.startedAt],
    )
  }

  async markStopped(id: string): Promise<void> {
    await this.db.query('UPDATE services SET stopped_at = now() WHERE id = $1', [id])
  }

  /** Newest started first. */
  async list(limit: number): Promise<ServiceRow[]> {
    const r = await this.db.query(`SELECT ${COLUMNS} FROM services ORDER BY started_at DESC LIMIT $1`, [
      limit,
    ])
    return r.rows.map(serviceRow)
  }

  /** Services not stopped whose last beat is older than this. */
  async silentFor(seconds: number): Promise<ServiceRow[]> {
    const r = await this.db.query(
      `SELECT ${COLUMNS} FROM services
       WHERE stopped_at IS NULL AND beat_at < now() - make_interval(secs => $1) ORDER BY id`,
      [seconds],
    )
    return r.rows.map(serviceRow)
  }

  /** Removes services stopped, or silent, this long ago; returns their ids. */
  async forget(seconds: number): Promise<string[]> {
    const r = await this.db.query(
      'DELETE FROM services WHERE coalesce(stopped_at, beat_at) < now() - make_interval(secs => $1) RETURNING id',
      [seconds],
    )
    return r.rows.map((x) => x.id)
  }

  /** The lock whose holder is the one organizer across all processes sharing the database. */
  organizerLock(onLost: () => void): AdvisoryLock {
    return new AdvisoryLock(this.db, LOCK_IDS.organizer, onLost)
  }
}

/**
 * A session-level advisory lock on a connection of its own: held until released or until that connection
 * ends, when PostgreSQL frees it for another process.
 */
export class AdvisoryLock {
  private session: Dedicated | undefined
  private closed = false
  held = false

  constructor(
    private readonly db: Db,
    private readonly id: number,
    /** Runs when the connection holding the lock is lost (not after release). */
    private readonly onLost: () => void,
  ) {}

  /** Takes the lock if it is free; true while this holds it. Connects first, again after a loss. */
  async tryAcquire(): Promise<boolean> {
    if (this.closed) return false
    if (!this.session) {
      const s = await this.db.dedicated(() => this.lost())
      if (this.closed) {
        await s.close()
        return false
      }
      this.session = s
    }
    if (!this.held) {
      const r = await this.session.client.query('SELECT pg_try_advisory_lock($1) AS ok', [this.id])
      this.held = r.rows[0].ok === true
    }
    return this.held
  }

  /** Gives the lock up for good, by ending its connection. */
  async release(): Promise<void> {
    this.closed = true
    this.held = false
    const s = this.session
    this.session = undefined
    await s?.close()
  }

  private lost(): void {
    const wasHeld = this.held
    this.session = undefined
    this.held = false
    if (wasHeld) this.onLost()
  }
}

function serviceRow(x: Record<string, any>): ServiceRow {
  return {
    ...x,
    startedAt: x.startedAt.toISOString(),
    beatAt: x.beatAt.toISOString(),
    stoppedAt: isoOrNull(x.stoppedAt),
  } as ServiceRow
}
