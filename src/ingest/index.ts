import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import { Backoff } from '../lib/backoff.js'
import { withDeadline } from '../lib/deadline.js'
import type { Metrics } from '../metrics/index.js'
import { DEVICE_ALERTS, Quality, type QualityBatch, qualityOptions } from '../quality/index.js'
import type { Batch, Consumer, Envelope, Queue } from '../queue/types.js'
import { extractJudged } from '../readings/extract.js'
import { RENAMED_REASONS, parsePayload } from '../readings/index.js'
import {
  type AlertRaise,
  type BatchWriter,
  type Clear,
  type DueAlert,
  type QuarantineInsert,
  type Severity,
  TelemetryBatch,
  type WriteResult,
} from '../store/index.js'
import { pgFault } from '../store/outage.js'

/** Backoff while PostgreSQL is unreachable: capped so a returning database is found within seconds. */
const BACKOFF_MIN_MS = 200
const BACKOFF_MAX_MS = 5_000
/**
 * A batch not written by then is given up and handed out again (its write may still land: the key dedups it),
 * so no lost connection can hold a batch, and a slot of the ingest, for good.
 */
const BATCH_DEADLINE_MS = 60_000
/** An item that fails this many deliveries for a reason other than an outage goes to the quarantine. */
export const POISON_ATTEMPTS = 5
/** Device alerts handed to DeviceAlerts per call. */
const ALERTS_PER_HANDOVER = 500

/** A device alert the quality checks raise: `device_check` (too many flagged readings), `sequence_gap`. */
export interface DeviceAlert {
  deviceId: string
  type: string
  severity: Severity
  details: Record<string, unknown>
}

/**
 * Where the ingest raises and clears device alerts (the alerts store). The checks record what they want in
 * PostgreSQL with each batch (device_alerts_due); the ingest hands that over after the batch's commit, and
 * again every check interval until a hand-over succeeds: at least once, the latest wish per (device, type).
 */
export interface DeviceAlerts {
  /** Opens each alert, or refreshes it (last seen, count, details) if it is open: one per (device, type). */
  raise(alerts: readonly DeviceAlert[]): Promise<void>
  /** Clears each alert that is open; one that is not is left alone. */
  clear(alerts: ReadonlyArray<{ deviceId: string; type: string }>): Promise<void>
}

/** DeviceAlerts over the alerts store (store/alerts.ts): one transaction per hand-over's raises, one for its clears. */
export function storeAlerts(alerts: {
  raise(raises: readonly AlertRaise[]): Promise<unknown>
  clear(which: readonly Clear[]): Promise<unknown>
}): DeviceAlerts {
  const device = (id: string) => ({ kind: 'device' as const, id })
  return {
    async raise(list) {
      await alerts.raise(
        list.map((a) => ({
          subject: device(a.deviceId),
          type: a.type,
          severity: a.severity,
          details: a.details,
        })),
      )
    },
    async clear(list) {
      await alerts.clear(list.map((a) => ({ subject: device(a.deviceId), type: a.type })))
    },
  }
}

/** What the ingest reports: to the metrics directly, or across a thread boundary (see thread.ts). */
export interface IngestEvents {
  batch(result: WriteResult, items: number, seconds: number): void
  error(kind: 'outage' | 'data' | 'poison', message: string): void
  database(up: boolean): void
}

export function metricsEvents(m: Metrics): IngestEvents {
  return {
    batch(r, items, seconds) {
      m.stored.inc(r.stored)
      m.duplicate.inc(r.duplicate)
      m.quarantined.inc(r.quarantined)
      m.ingestBatchSize.observe(items)
      m.ingestBatchSeconds.observe(seconds)
    },
    error(kind) {
      m.ingestErrors.inc({ kind })
    },
    database(up) {
      m.databaseUp.set(up ? 1 : 0)
    },
  }
}

export interface IngestOptions {
  batchSize: number
  batchMs: number
  concurrency: number
  /** How often open sequence gaps are checked for age, and alerts not yet handed over are tried again. */
  sweepSeconds: number
  gapAlertAfterSeconds: number
}

/**
 * The one way to build the ingest, from the configuration: the process runs what this returns (app.ts), and
 * so does the ingest thread (worker.ts) on its own queue view and database pool.
 */
export function createIngest(
  config: Config,
  deps: {
    queue: Queue
    writer: BatchWriter
    events: IngestEvents
    log: Logger
    /** Where the device alerts the quality checks want go (storeAlerts). */
    alerts: DeviceAlerts
  },
): Ingest {
  return new Ingest(
    deps.queue,
    deps.writer,
    deps.events,
    deps.log,
    {
      batchSize: config.ingestBatchSize,
      batchMs: config.ingestBatchMs,
      concurrency: config.ingestConcurrency,
      sweepSeconds: config.checkIntervalSeconds,
      gapAlertAfterSeconds: config.gapAlertAfterSeconds,
    },
    new Quality(qualityOptions(config), deps.log),
    deps.alerts,
  )
}

/**
 * Drains the durable queue into PostgreSQL: batches of up to `batchSize` queue items, `concurrency` batches
 * in flight, each written in one transaction, judged by the quality checks in it, and removed from the queue
 * only after its commit.
 */
export class Ingest {
  private consumer: Consumer | undefined
  private running = false
  private loop: Promise<void> | undefined
  private inflight = 0
  private slotFree: (() => void) | undefined
  private readonly backoff = new Backoff(BACKOFF_MIN_MS, BACKOFF_MAX_MS)
  private pausedUntil = 0
  private sweeper: NodeJS.Timeout | undefined
  private sweeping: Promise<void> | undefined
  /** The running hand-over of device alerts, and whether another was asked for meanwhile. */
  private handingOver: Promise<void> | undefined
  private handOverAgain = false
  databaseUp = true
  lastError: string | undefined

  constructor(
    private readonly queue: Queue,
    private readonly store: BatchWriter,
    private readonly events: IngestEvents,
    private readonly log: Logger,
    private readonly opts: IngestOptions,
    private readonly quality: Quality,
    private readonly alerts: DeviceAlerts,
  ) {}

  start(): void {
    this.running = true
    this.consumer = this.queue.consumer()
    this.events.database(true)
    this.loop = this.run()
    this.sweeper = setInterval(() => this.sweep(), this.opts.sweepSeconds * 1000)
    this.sweeper.unref()
  }

  async stop(): Promise<void> {
    this.running = false
    clearInterval(this.sweeper)
    await this.consumer?.close()
    await this.loop
    while (this.inflight > 0) await new Promise<void>((r) => (this.slotFree = r))
    await this.sweeping
    await this.handingOver
  }

  /**
   * Every check interval: gaps open past their time want their alert (those of devices that went silent
   * too), and alerts not handed over yet are tried again.
   */
  private sweep(): void {
    if (this.sweeping) return
    const gap = DEVICE_ALERTS.sequenceGap
    this.sweeping = this.store.gaps
      .raiseOverdue(this.opts.gapAlertAfterSeconds, gap.severity)
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'sequence gap sweep failed'))
      .then(() => this.handOver())
      .finally(() => {
        this.sweeping = undefined
      })
  }

  /** Hands the device alerts wanted to DeviceAlerts, one hand-over at a time; a failure waits for the sweep. */
  private handOver(): void {
    const alerts = this.alerts
    if (this.handingOver) {
      this.handOverAgain = true
      return
    }
    const deliver = async (due: DueAlert[]) => {
      const raise = due.filter((a) => a.active)
      const clear = due.filter((a) => !a.active)
      if (raise.length > 0)
        await alerts.raise(
          raise.map((a) => ({
            deviceId: a.deviceId,
            type: a.type,
            severity: a.severity as Severity,
            details: a.details,
          })),
        )
      if (clear.length > 0) await alerts.clear(clear.map((a) => ({ deviceId: a.deviceId, type: a.type })))
    }
    this.handingOver = (async () => {
      do {
        this.handOverAgain = false
        while ((await this.store.dueAlerts.deliver(ALERTS_PER_HANDOVER, deliver)) === ALERTS_PER_HANDOVER) {}
      } while (this.handOverAgain)
    })()
      .catch((err) =>
        this.log.warn({ err: (err as Error).message }, 'device alerts not handed over; retrying'),
      )
      .finally(() => {
        this.handingOver = undefined
      })
  }

  private async run(): Promise<void> {
    const consumer = this.consumer!
    while (this.running) {
      if (this.inflight >= this.opts.concurrency) {
        await new Promise<void>((r) => (this.slotFree = r))
        continue
      }
      const wait = this.pausedUntil - Date.now()
      if (wait > 0) {
        await new Promise((r) => setTimeout(r, wait).unref())
        continue
      }
      let batch: Batch | null
      try {
        batch = await consumer.next(this.opts.batchSize, this.opts.batchMs)
      } catch (err) {
        this.log.error({ err }, 'reading the queue failed')
        this.pause()
        continue
      }
      if (batch === null) break
      this.inflight++
      this.process(batch).finally(() => {
        this.inflight--
        const f = this.slotFree
        this.slotFree = undefined
        f?.()
      })
    }
  }

  private async process(batch: Batch): Promise<void> {
    const started = process.hrtime.bigint()
    try {
      const result = await withDeadline(
        this.write(batch.items, batch.attempt),
        BATCH_DEADLINE_MS,
        `batch write timed out after ${BATCH_DEADLINE_MS / 1000} s`,
      )
      await batch.ack()
      this.events.batch(result, batch.items.length, Number(process.hrtime.bigint() - started) / 1e9)
      if (!this.databaseUp) this.log.info('PostgreSQL is back; draining the queue')
      this.databaseUp = true
      this.events.database(true)
      this.backoff.reset()
      this.lastError = undefined
    } catch (err) {
      this.lastError = (err as Error).message
      this.events.error('outage', this.lastError)
      if (this.databaseUp)
        this.log.error(
          { err: this.lastError },
          'cannot write to PostgreSQL; keeping messages queued and retrying',
        )
      this.databaseUp = false
      this.events.database(false)
      batch.nack()
      this.pause()
    }
  }

  private pause(): void {
    this.pausedUntil = Date.now() + this.backoff.next()
  }

  /**
   * Writes the items; a data error (the database refused some row) splits the items in halves until the
   * culprit is alone, then quarantines it, so one bad message never blocks or loses the rest.
   */
  private async write(items: readonly Envelope[], attempt: number): Promise<WriteResult> {
    const judge = this.quality.batch()
    try {
      const { batch, quarantine } = build(items, judge)
      const result = await this.store.writeBatch(batch, quarantine, judge)
      if (judge.alerts > 0) this.handOver()
      return result
    } catch (err) {
      judge.discard()
      const fault = pgFault(err)
      const data = fault === 'data'
      // An outage is never the messages' fault: retry them whatever the count. Any other error that keeps
      // coming back is treated like a data error, so a poison message cannot block the queue forever.
      if (!data && (fault === 'outage' || attempt + 1 < POISON_ATTEMPTS)) throw err
      this.events.error(data ? 'data' : 'poison', (err as Error).message)
      const reason = data ? 'database_rejected' : 'ingest_failed'
      if (items.length === 1) return this.quarantineWhole(items[0], reason, (err as Error).message)
      const mid = items.length >> 1
      const a = await this.write(items.slice(0, mid), attempt)
      const b = await this.write(items.slice(mid), attempt)
      return {
        stored: a.stored + b.stored,
        duplicate: a.duplicate + b.duplicate,
        quarantined: a.quarantined + b.quarantined,
        rejected: a.rejected + b.rejected,
      }
    }
  }

  private quarantineWhole(env: Envelope, reason: 'database_rejected' | 'ingest_failed', detail: string) {
    this.log.warn({ deviceId: env.deviceId, reason, detail }, 'message quarantined')
    return this.store.writeBatch(new TelemetryBatch(), [
      {
        sourceId: env.id,
        deviceId: env.deviceId,
        transport: env.transport,
        topic: env.topic ?? null,
        reason,
        detail,
        payload: env.payload,
        acked: env.rejected === undefined,
        receivedAt: env.receivedAt,
      },
    ])
  }
}

/**
 * Parses each item with the gateways' own rules into COPY rows and quarantine rows, in queue order: of readings
 * that share a msgId, the first is the one stored (TelemetryBatch), and the one the quality checks see.
 */
export function build(
  items: readonly Envelope[],
  judge?: QualityBatch,
): { batch: TelemetryBatch; quarantine: QuarantineInsert[] } {
  const batch = new TelemetryBatch()
  const quarantine: QuarantineInsert[] = []
  for (const env of items) {
    if (env.rejected) {
      quarantine.push(qrow(env, env.id, env.rejected.reason, env.rejected.detail, env.payload, false))
      continue
    }
    // A payload its gateway found all valid is read without JSON.parse when its form allows (extract.ts).
    // An idempotency key changes how missing msgIds are derived, which only parsePayload knows.
    const fast =
      env.allValid && env.idempotencyKey === undefined
        ? extractJudged(env.payload, env.deviceId, env.receivedAt)
        : undefined
    if (fast !== undefined) {
      // Should the device be gone when the batch is written, its readings are quarantined under the envelope.
      if (fast.length > 0) batch.from(env)
      for (const r of fast) {
        if (batch.add(env.deviceId, r.msgId, r.ts, env.receivedAt, r.values, r.json))
          judge?.add(env.deviceId, r.msgId, r.ts, env.receivedAt, r.values)
      }
      continue
    }
    const parsed = parsePayload(env.payload, env.deviceId, env.receivedAt, env.idempotencyKey)
    // Should the device be gone when the batch is written, its readings are quarantined under the envelope.
    if (parsed.readings.length > 0) batch.from(env)
    for (const r of parsed.readings) {
      if (batch.add(env.deviceId, r.msgId, r.ts, env.receivedAt, r.values))
        judge?.add(env.deviceId, r.msgId, r.ts, env.receivedAt, r.values)
    }
    for (const rej of parsed.rejections) {
      const whole = rej.element === undefined
      quarantine.push(
        qrow(
          env,
          whole ? env.id : `${env.id}#${rej.index}`,
          rej.reason,
          rej.detail,
          whole ? env.payload : Buffer.from(rej.element!),
          true,
        ),
      )
    }
  }
  return { batch, quarantine }
}

function qrow(
  env: Envelope,
  sourceId: string,
  reason: string,
  detail: string,
  payload: Buffer,
  acked: boolean,
): QuarantineInsert {
  return {
    sourceId,
    deviceId: env.deviceId,
    transport: env.transport,
    topic: env.topic ?? null,
    // A reason renamed since the message was queued (a RabbitMQ header) is stored under its current name.
    reason: RENAMED_REASONS.get(reason) ?? reason,
    detail,
    payload,
    acked,
    receivedAt: env.receivedAt,
  }
}
