import { Cron } from 'croner'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'

/** What a job's run resolves to when it found nothing for this process to do (not the organizer's leader). */
export const SKIPPED = 'skipped'
/** A job's run: SKIPPED, or anything else once it did its work. */
export type JobRun = () => Promise<unknown>

interface Job {
  readonly name: string
  readonly fn: JobRun
  readonly everySeconds: number
  cron: Cron | undefined
  running: Promise<void> | undefined
  /** Failed runs in a row: the first is a warning, the rest (an outage, say) are only debug lines. */
  failures: number
}

/**
 * A process's periodic jobs, on croner: each every N seconds (a per-second pattern with croner's minimum
 * interval, so any N works, not only divisors of a minute), one run of a job at a time, a failed run logged
 * and the next one made as planned. Each run that did something sets the job's last run time and duration in
 * /metrics, and counts as ok or failed.
 */
export class Scheduler {
  private readonly jobs = new Map<string, Job>()
  private stopped = false

  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** Adds a job; it runs from start() on. */
  add(name: string, everySeconds: number, fn: JobRun): void {
    this.jobs.set(name, { name, fn, everySeconds, cron: undefined, running: undefined, failures: 0 })
  }

  /** Schedules every job, its first run one period from now (a process runs its first round as it starts). */
  start(): void {
    for (const j of this.jobs.values()) {
      j.cron = new Cron(
        '* * * * * *',
        {
          interval: j.everySeconds,
          startAt: new Date(Date.now() + j.everySeconds * 1000),
          unref: true,
          // run() already keeps one run at a time; this keeps croner from even calling it meanwhile.
          protect: true,
        },
        () => this.run(j.name),
      )
    }
  }

  /** Runs the job now; if a run is going, resolves when that one ends instead of starting another. */
  run(name: string): Promise<void> {
    const job = this.jobs.get(name)
    if (!job) return Promise.reject(new Error(`no job ${name}`))
    if (this.stopped) return Promise.resolve()
    job.running ??= this.execute(job).finally(() => {
      job.running = undefined
    })
    return job.running
  }

  /** No run starts after this; resolves once the runs going have ended. */
  async stop(): Promise<void> {
    this.stopped = true
    for (const j of this.jobs.values()) j.cron?.stop()
    await Promise.all([...this.jobs.values()].map((j) => j.running))
  }

  private async execute(job: Job): Promise<void> {
    const started = process.hrtime.bigint()
    let result: 'ok' | 'failed' = 'ok'
    try {
      if ((await job.fn()) === SKIPPED) return
      if (job.failures > 0)
        this.log.info({ job: job.name, failures: job.failures }, 'scheduled job runs again')
      job.failures = 0
    } catch (err) {
      result = 'failed'
      const line = { job: job.name, err: (err as Error).message }
      if (job.failures++ === 0) this.log.warn(line, 'scheduled job failed')
      else this.log.debug(line, 'scheduled job failed again')
    }
    const labels = { job: job.name }
    this.metrics.jobLastRun.set(labels, Date.now() / 1000)
    this.metrics.jobLastDuration.set(labels, Number(process.hrtime.bigint() - started) / 1e9)
    this.metrics.jobRuns.inc({ job: job.name, result })
  }
}
