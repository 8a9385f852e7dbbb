import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { AdvisoryLock, Store } from '../store/index.js'

/** A service that missed this many beats is reported silent. */
const SILENT_AFTER_BEATS = 3
/** Rows of services stopped or silent this long are removed. */
const FORGET_AFTER_SECONDS = 7 * 86_400

/** Runs `round` now, then every interval until the returned timer is cleared; a failed later round is logged. */
async function everyInterval(
  seconds: number,
  round: () => Promise<void>,
  failed: (err: Error) => void,
): Promise<NodeJS.Timeout> {
  await round()
  const timer = setInterval(() => round().catch(failed), seconds * 1000)
  timer.unref()
  return timer
}

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
    const me = {
      id: this.id,
      roles: this.roles,
      host: hostname(),
      pid: process.pid,
      startedAt: this.startedAt,
    }
    this.timer = await everyInterval(
      this.intervalSeconds,
      () => this.store.services.beat(me),
      (err) => this.log.debug({ err: err.message }, 'heartbeat not written'),
    )
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.store.services.markStopped(this.id).catch(() => {})
  }
}

/**
 * The organizer: scheduled checks that must run once across processes. Each tick it tries a PostgreSQL
 * advisory lock on its own connection; the process holding it leads until its connection ends. Today it
 * watches the services' heartbeats; data-quality rules and alerts build on this loop.
 */
export class Organizer {
  private readonly lock: AdvisoryLock
  private timer: NodeJS.Timeout | undefined
  private readonly silent = new Set<string>()
  leader = false

  constructor(
    private readonly store: Store,
    private readonly intervalSeconds: number,
    private readonly log: Logger,
  ) {
    this.lock = store.services.organizerLock(() => {
      this.leader = false
      this.log.warn('organizer lost its database connection; giving up the lead')
    })
  }

  async start(): Promise<void> {
    this.timer = await everyInterval(
      this.intervalSeconds,
      () => this.tick(),
      (err) => this.log.warn({ err: err.message }, 'organizer tick failed'),
    )
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.leader = false
    await this.lock.release()
  }

  /** One round: hold or take the lock, then, as leader, run the checks. */
  async tick(): Promise<void> {
    const was = this.leader
    this.leader = await this.lock.tryAcquire()
    if (this.leader && !was) this.log.info('this process leads the organizer')
    if (this.leader) await this.checkServices()
  }

  private async checkServices(): Promise<void> {
    const silent = await this.store.services.silentFor(this.intervalSeconds * SILENT_AFTER_BEATS)
    const now = new Set<string>()
    for (const s of silent) {
      now.add(s.id)
      if (!this.silent.has(s.id)) {
        this.log.warn(
          { service: s.id, roles: s.roles, host: s.host, pid: s.pid, lastBeat: s.beatAt },
          'service silent',
        )
      }
    }
    for (const id of this.silent) if (!now.has(id)) this.log.info({ service: id }, 'service beating again')
    this.silent.clear()
    for (const id of now) this.silent.add(id)
    // A forgotten service is gone, not beating again.
    for (const id of await this.store.services.forget(FORGET_AFTER_SECONDS)) this.silent.delete(id)
  }
}
