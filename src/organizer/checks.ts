import { statfs } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Role } from '../config/index.js'
import type { Health } from '../lib/component.js'
import { withDeadline } from '../lib/deadline.js'
import type { Metrics } from '../metrics/index.js'
import type { Queue } from '../queue/types.js'
import type { AlertRaise, Severity, Store, Subject } from '../store/index.js'
import { CounterBalance, readCounts, type Snapshot } from './counters.js'
import { Scheduler } from './scheduler.js'

/** A ping slower than this counts as PostgreSQL down. */
const PING_TIMEOUT_MS = 2000
/** Another service counts as running when it beat within this many check intervals (as the organizer's). */
const LIVE_BEATS = 3

/** A listener of this process, by name (mqtt, http, ...), and whether it is bound. */
export interface Listening {
  name: string
  listening(): boolean
}

export interface ServiceChecksOptions {
  /** The name alerts of this process are raised under (see serviceName). */
  service: string
  /** This process's heartbeat id: itself, among the services. */
  heartbeatId: () => string | undefined
  roles: readonly Role[]
  dataDir: string
  intervalSeconds: number
  maxIngestLagSeconds: number
  minFreeDiskBytes: number
  listeners: readonly Listening[]
}

/** One check's finding: undefined when it has none this round (it cannot tell, or does not apply). */
interface Finding {
  ok: boolean
  /** What is wrong (or right), in a sentence, for /readyz and the alert. */
  detail: string
  /** The numbers behind it, for the alert's details. */
  numbers?: Record<string, unknown>
  /** Overrides the check's severity for this finding. */
  severity?: Severity
}

interface Check {
  /** Its label in iotcore_check_up and its key in /readyz. */
  name: string
  /** The type of the alert a failure opens. */
  alert: string
  severity: Severity
  /** A failure makes the process not ready (/readyz 503), not only alerting. */
  gatesReadiness: boolean
  run(): Promise<Finding | undefined>
}

/** A check's failure as known to this process, and how much of it is written. */
interface State {
  failing: boolean
  /** The latest finding; undefined until the check found one. */
  finding: Finding | undefined
  /** The latest failing finding: what its alert says. */
  failure: Finding | undefined
  since: Date | undefined
  lastSeen: Date | undefined
  /** Failed rounds not yet written to its alert (PostgreSQL was down, say). */
  unwritten: number
  /** Whether an alert of ours is open; undefined at start, when a predecessor's may be. */
  open: boolean | undefined
}

/**
 * The service integrity checks of one process, every check interval: PostgreSQL, the queue, each listener,
 * free disk in the data dir, the ingest's lag and the counters' reconciliation. Each runs in every process
 * that has what it checks, since what it checks is that process's own (its pool, its queue, its sockets, its
 * counters). A failure opens a service alert under this process's name (bumped each round it persists), shows
 * in /metrics (iotcore_check_up) and /readyz, and a pass clears it.
 *
 * An alert cannot be written while PostgreSQL is down: the failure is kept here, shown in /readyz and
 * /metrics meanwhile, and written once the database is back, with the times it was first and last seen, then
 * cleared if it is over. Alerts open at start (a predecessor's, under the same name) are cleared by the first
 * passing round.
 */
export class ServiceChecks {
  private readonly scheduler: Scheduler
  private readonly checks: Check[]
  private readonly state = new Map<string, State>()
  private balance: CounterBalance | undefined
  private readonly subject: Subject

  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly metrics: Metrics,
    private readonly opts: ServiceChecksOptions,
    private readonly log: Logger,
  ) {
    this.scheduler = new Scheduler(metrics, log)
    this.subject = { kind: 'service', id: opts.service }
    this.checks = [
      this.postgres(),
      this.queueCheck(),
      ...opts.listeners.map((l) => this.listener(l)),
      this.disk(),
      this.ingestLag(),
      ...(opts.roles.includes('gateway') && opts.roles.includes('ingest') ? [this.counters()] : []),
    ]
    for (const c of this.checks)
      this.state.set(c.name, {
        failing: false,
        finding: undefined,
        failure: undefined,
        since: undefined,
        lastSeen: undefined,
        unwritten: 0,
        open: undefined,
      })
  }

  async start(): Promise<void> {
    this.balance = new CounterBalance(await this.snapshot())
    this.scheduler.add('checks', this.opts.intervalSeconds, () => this.round())
    await this.runOnce()
    this.scheduler.start()
  }

  async stop(): Promise<void> {
    await this.scheduler.stop()
  }

  /** One round of every check, then their alerts written; resolves when done. */
  runOnce(): Promise<void> {
    return this.scheduler.run('checks')
  }

  /** For /readyz: the failing checks, and not ready while one that gates readiness fails. */
  health(): Health {
    const failing: Record<string, string> = {}
    let ok = true
    for (const c of this.checks) {
      const s = this.state.get(c.name)!
      if (!s.failing) continue
      failing[c.name] = s.failure!.detail
      if (c.gatesReadiness) ok = false
    }
    return { ok, failing }
  }

  private async round(): Promise<void> {
    const now = new Date()
    const findings = await Promise.all(
      this.checks.map((c) =>
        c
          .run()
          .catch((err): Finding => ({ ok: false, detail: `the check failed: ${(err as Error).message}` })),
      ),
    )
    for (let i = 0; i < this.checks.length; i++) {
      const c = this.checks[i]
      const f = findings[i]
      if (!f) continue
      const s = this.state.get(c.name)!
      this.metrics.checkUp.set({ check: c.name }, f.ok ? 1 : 0)
      if (f.ok) {
        if (s.failing) this.log.info({ check: c.name }, 'service check passes again')
        s.failing = false
        s.finding = f
        continue
      }
      if (!s.failing) this.log.warn({ check: c.name, detail: f.detail }, 'service check failed')
      s.failing = true
      s.finding = f
      s.failure = f
      s.since ??= now
      s.lastSeen = now
      s.unwritten++
    }
    await this.write()
  }

  /**
   * Writes what changed: raises first, so that a failure seen only while PostgreSQL was down is recorded
   * before it is cleared; if they cannot be written, nothing is cleared either, and the next round tries again.
   */
  private async write(): Promise<void> {
    const raises: AlertRaise[] = []
    const raised: State[] = []
    const clears: Check[] = []
    for (const c of this.checks) {
      const s = this.state.get(c.name)!
      if (s.unwritten > 0) {
        const f = s.failure!
        raises.push({
          subject: this.subject,
          type: c.alert,
          severity: f.severity ?? c.severity,
          details: { check: c.name, detail: f.detail, ...f.numbers },
          count: s.unwritten,
          firstSeen: s.since,
          lastSeen: s.lastSeen,
        })
        raised.push(s)
      }
      if (!s.failing && s.finding && s.open !== false) clears.push(c)
    }
    try {
      await this.store.alerts.raise(raises)
      for (const s of raised) {
        s.unwritten = 0
        s.open = true
      }
      await this.store.alerts.clear(clears.map((c) => ({ subject: this.subject, type: c.alert })))
      for (const c of clears) {
        const s = this.state.get(c.name)!
        s.open = false
        s.since = undefined
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'service alerts not written yet')
    }
  }

  private postgres(): Check {
    return {
      name: 'postgres',
      alert: 'postgres_down',
      severity: 'critical',
      gatesReadiness: true,
      run: async () => {
        try {
          await withDeadline(this.store.ping(), PING_TIMEOUT_MS, `no answer within ${PING_TIMEOUT_MS} ms`)
          return { ok: true, detail: 'answers' }
        } catch (err) {
          return { ok: false, detail: `PostgreSQL does not answer: ${(err as Error).message}` }
        }
      },
    }
  }

  private queueCheck(): Check {
    return {
      name: 'queue',
      alert: 'queue_down',
      severity: 'critical',
      gatesReadiness: true,
      run: async () => {
        const q = this.queue.stats()
        const numbers = { kind: this.queue.kind, depth: q.depth, bytes: q.bytes, maxBytes: q.maxBytes }
        if (!q.healthy)
          return { ok: false, detail: `the ${this.queue.kind} queue fails: ${q.detail}`, numbers }
        if (q.full)
          return {
            ok: false,
            detail: `the ${this.queue.kind} queue's disk budget is spent: the gateways are not acknowledging`,
            numbers,
          }
        return { ok: true, detail: 'appends and hands out', numbers }
      },
    }
  }

  private listener(l: Listening): Check {
    return {
      name: `listener_${l.name}`,
      alert: `${l.name}_listener_down`,
      severity: 'critical',
      gatesReadiness: true,
      run: async () =>
        l.listening()
          ? { ok: true, detail: 'listening' }
          : { ok: false, detail: `the ${l.name} listener is not listening: devices cannot connect to it` },
    }
  }

  private disk(): Check {
    const { dataDir, minFreeDiskBytes } = this.opts
    return {
      name: 'disk',
      alert: 'disk_low',
      severity: 'major',
      gatesReadiness: false,
      run: async () => {
        const s = await statfs(dataDir)
        const freeBytes = s.bavail * s.bsize
        const numbers = { dataDir, freeBytes, minFreeBytes: minFreeDiskBytes }
        return freeBytes < minFreeDiskBytes
          ? { ok: false, detail: `${freeBytes} bytes free in ${dataDir}, below ${minFreeDiskBytes}`, numbers }
          : { ok: true, detail: `${freeBytes} bytes free`, numbers }
      },
    }
  }

  private ingestLag(): Check {
    const max = this.opts.maxIngestLagSeconds
    return {
      name: 'ingest_lag',
      alert: 'ingest_lag',
      severity: 'major',
      gatesReadiness: false,
      run: async () => {
        const q = this.queue.stats()
        const numbers = { oldestAgeSeconds: Math.round(q.oldestAgeSeconds), maxSeconds: max, depth: q.depth }
        return q.oldestAgeSeconds > max
          ? {
              ok: false,
              detail: `the oldest queued message is ${Math.round(q.oldestAgeSeconds)} s old, past ${max} s: the ingest lags`,
              numbers,
            }
          : { ok: true, detail: 'keeping up', numbers }
      },
    }
  }

  /**
   * The balance needs every count of the readings in one place: the gateway's acks and the ingest's results in
   * one process, with no other process acknowledging into, or storing from, the same queue. It finds no verdict
   * while another live service has the gateway or ingest role, and where this process lacks either role it is
   * not run at all (see README, Alerts).
   */
  private counters(): Check {
    return {
      name: 'counters',
      alert: 'counter_drift',
      severity: 'critical',
      gatesReadiness: false,
      run: async () => {
        // Without the services (PostgreSQL down: its own check says so) the balance cannot be judged.
        const shared = await this.othersShareTheQueue().catch(() => undefined)
        if (shared !== false) return undefined
        const s = await this.snapshot()
        const v = this.balance!.observe(s)
        if (v.state === 'busy' || v.state === 'unconfirmed') return undefined
        const unaccounted = v.state === 'drift' ? v.unaccounted : 0
        this.metrics.countersUnaccounted.set(unaccounted)
        const numbers = {
          acked: s.acked,
          stored: s.stored,
          duplicate: s.duplicate,
          quarantined: s.quarantined,
          queued: s.queued,
          received: s.received,
          rejected: s.rejected,
          unaccounted,
          ...(this.balance!.start ? { startedWith: this.balance!.start } : {}),
        }
        if (v.state === 'balanced')
          return { ok: true, detail: 'acked = stored + duplicate + quarantined + queued', numbers }
        const sum = `${s.stored} stored + ${s.duplicate} duplicate + ${s.quarantined} quarantined, the queue empty`
        return unaccounted > 0
          ? {
              ok: false,
              detail: `${s.acked} readings acked, ${sum}: ${unaccounted} acked readings are unaccounted for`,
              numbers,
            }
          : {
              ok: false,
              // More stored than acked loses nothing: an append can land after its connection closed (the
              // device got no ack and sends again, a duplicate), and an ingest may count a batch twice.
              severity: 'warning',
              detail: `${s.acked} readings acked, ${sum}: ${-unaccounted} more accounted for than acked`,
              numbers,
            }
      },
    }
  }

  private async othersShareTheQueue(): Promise<boolean> {
    const me = this.opts.heartbeatId()
    const since = Date.now() - LIVE_BEATS * this.opts.intervalSeconds * 1000
    return (await this.store.services.list(1000)).some(
      (s) =>
        s.id !== me &&
        s.stoppedAt === null &&
        Date.parse(s.beatAt) >= since &&
        s.roles.some((r) => r === 'gateway' || r === 'ingest'),
    )
  }

  private async snapshot(): Promise<Snapshot> {
    const counts = await readCounts(this.metrics)
    return { ...counts, queued: this.queue.stats().depth, appending: this.queue.appending }
  }
}
