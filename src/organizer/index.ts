import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import type { Queue } from '../queue/types.js'
import {
  type AdvisoryLock,
  type AlertRaise,
  EVENTS_CHANNEL,
  type Listener,
  type Store,
} from '../store/index.js'
import { Deliverer } from './deliverer.js'
import { SKIPPED, Scheduler } from './scheduler.js'

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
  private readonly scheduler: Scheduler
  private readonly startedAt = new Date()

  constructor(
    private readonly store: Store,
    private readonly roles: readonly string[],
    intervalSeconds: number,
    metrics: Metrics,
    log: Logger,
  ) {
    this.scheduler = new Scheduler(metrics, log)
    const me = {
      id: this.id,
      roles: this.roles,
      host: hostname(),
      pid: process.pid,
      startedAt: this.startedAt,
    }
    this.scheduler.add('heartbeat', intervalSeconds, () => this.store.services.beat(me))
  }

  async start(): Promise<void> {
    await this.scheduler.run('heartbeat')
    this.scheduler.start()
  }

  async stop(): Promise<void> {
    await this.scheduler.stop()
    await this.store.services.markStopped(this.id).catch(() => {})
  }
}

/**
 * The name a process's service alerts are raised under: its host and roles. Stable across restarts, so a
 * restarted process clears what its predecessor raised once its checks pass (the heartbeat's id, which has the
 * pid in it, would leave those open for good).
 */
export function serviceName(roles: readonly string[]): string {
  return `${hostname()}:${roles.join(',')}`
}

export interface OrganizerOptions {
  checkIntervalSeconds: number
  offlineAfterSeconds: number
  webhookRetryForSeconds: number
}

/** The leader looks for webhook deliveries due this often, besides when an event is announced. */
const DELIVERY_POLL_SECONDS = 5
/** Outbox housekeeping: hourly, removing what was finished this long ago. */
const PRUNE_EVERY_SECONDS = 3600
const KEEP_FINISHED_SECONDS = 30 * 86_400
/** Offline alerts opened per sweep at most, so a fleet gone silent at once opens them over a few rounds. */
const OFFLINE_PER_SWEEP = 1000
/** The alert a silent service gets (the service being its heartbeat id). */
export const SILENT = 'silent'

/**
 * The organizer: scheduled jobs that must run once across processes. Before each run a job tries a PostgreSQL
 * advisory lock on its own connection; the process holding it leads until its connection ends, and only the
 * leader's jobs do anything. The jobs: the services' heartbeats (a silent one gets an alert), devices going
 * offline and coming back, webhook deliveries from the events outbox (also woken at once by each event's
 * NOTIFY), and the outbox's housekeeping.
 */
export class Organizer {
  private readonly lock: AdvisoryLock
  private readonly scheduler: Scheduler
  private readonly deliverer: Deliverer
  private listener: Listener | undefined
  private readonly silent = new Set<string>()
  private delivering: Promise<void> | undefined
  private deliverAgain = false
  private acquiring: Promise<boolean> | undefined
  /** When this process took the lead: the organizer has watched the devices since. */
  private leadingSince = new Date()
  leader = false

  constructor(
    private readonly store: Store,
    private readonly opts: OrganizerOptions,
    /** This process's queue: its lag is a grace before a device counts as offline. */
    private readonly queue: Queue | undefined,
    metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.lock = store.services.organizerLock(() => {
      this.leader = false
      this.log.warn('organizer lost its database connection; giving up the lead')
    })
    this.scheduler = new Scheduler(metrics, log)
    this.deliverer = new Deliverer(store, opts.webhookRetryForSeconds, metrics, log)
    const every = opts.checkIntervalSeconds
    this.scheduler.add('services', every, () => this.led(() => this.checkServices()))
    this.scheduler.add('offline', every, () => this.led(() => this.sweepOffline()))
    this.scheduler.add('webhooks', DELIVERY_POLL_SECONDS, () => this.led(() => this.deliverer.round()))
    this.scheduler.add('prune', PRUNE_EVERY_SECONDS, () => this.led(() => this.prune()))
  }

  async start(): Promise<void> {
    this.listener = await this.store.notifications.listen(EVENTS_CHANNEL, {
      notify: () => this.deliverSoon(),
      resumed: () => this.deliverSoon(),
    })
    await this.tick()
    // Deliveries left pending by an earlier leader, or while no process led, go out now.
    this.deliverSoon()
    this.scheduler.start()
  }

  async stop(): Promise<void> {
    this.deliverer.stop()
    await this.scheduler.stop()
    await this.delivering
    await this.listener?.stop()
    this.leader = false
    await this.lock.release()
  }

  /** One round of the periodic checks (services, offline devices), as leader; resolves when done. */
  async tick(): Promise<void> {
    await this.scheduler.run('services')
    await this.scheduler.run('offline')
  }

  /** Sends the webhook deliveries due now, as leader; resolves when done. */
  deliver(): Promise<void> {
    return this.scheduler.run('webhooks')
  }

  /**
   * An event was committed: its deliveries go out now rather than at the next poll. One announced while a run
   * is under way (which may have looked before the event was there) gets a run after it.
   */
  private deliverSoon(): void {
    this.deliverAgain = true
    if (this.delivering) return
    this.delivering = (async () => {
      while (this.deliverAgain) {
        this.deliverAgain = false
        await this.deliver()
      }
    })().finally(() => {
      this.delivering = undefined
    })
  }

  /** Runs `job` if this process leads (taking the lead if it is free). */
  private async led(job: () => Promise<unknown>): Promise<unknown> {
    const was = this.leader
    // Jobs due together share one attempt: two at once could each open a connection for the lock.
    this.acquiring ??= this.lock.tryAcquire().finally(() => {
      this.acquiring = undefined
    })
    this.leader = await this.acquiring
    if (this.leader && !was) {
      this.leadingSince = new Date()
      this.log.info('this process leads the organizer')
    }
    if (!this.leader) return SKIPPED
    return job()
  }

  private async checkServices(): Promise<void> {
    const silentFor = this.opts.checkIntervalSeconds * SILENT_AFTER_BEATS
    const silent = await this.store.services.silentFor(silentFor)
    const now = new Set<string>()
    const raises: AlertRaise[] = []
    for (const s of silent) {
      now.add(s.id)
      if (!this.silent.has(s.id)) {
        this.log.warn(
          { service: s.id, roles: s.roles, host: s.host, pid: s.pid, lastBeat: s.beatAt },
          'service silent',
        )
        raises.push({
          subject: { kind: 'service', id: s.id },
          type: SILENT,
          severity: 'major',
          details: {
            roles: s.roles,
            host: s.host,
            pid: s.pid,
            lastBeatAt: s.beatAt,
            silentAfterSeconds: silentFor,
          },
        })
      }
    }
    for (const id of this.silent) if (!now.has(id)) this.log.info({ service: id }, 'service beating again')
    await this.store.alerts.raise(raises)
    this.silent.clear()
    for (const id of now) this.silent.add(id)
    // A forgotten service is gone, not beating again.
    for (const id of await this.store.services.forget(FORGET_AFTER_SECONDS)) {
      this.silent.delete(id)
      now.delete(id)
    }
    // Whatever beats again, stopped cleanly or was forgotten has its alert cleared, including alerts a
    // leader before this one raised.
    const over = (await this.store.alerts.activeSubjects('service', SILENT)).filter((id) => !now.has(id))
    await this.store.alerts.clear(over.map((id) => ({ subject: { kind: 'service', id }, type: SILENT })))
  }

  private async sweepOffline(): Promise<void> {
    const lag = this.queue?.stats().oldestAgeSeconds ?? 0
    const { opened, cleared } = await this.store.alerts.sweepOffline(
      this.opts.offlineAfterSeconds,
      lag,
      this.leadingSince,
      OFFLINE_PER_SWEEP,
    )
    if (opened.length + cleared.length > 0)
      this.log.info({ offline: opened.length, back: cleared.length }, 'devices offline and back online')
  }

  private async prune(): Promise<void> {
    const n = await this.store.webhooks.prune(KEEP_FINISHED_SECONDS)
    if (n.deliveries + n.events > 0) this.log.info(n, 'old webhook deliveries and events removed')
  }
}
