import type { Logger } from 'pino'
import { ConsoleQueries } from './console.js'
import { CommandStore } from './commands.js'
import { AlertStore } from './alerts.js'
import { DeviceStore } from './devices.js'
import { GapStore } from './gaps.js'
import { IdempotencyStore } from './idempotency.js'
import { migrate } from './migrate.js'
import { Notifications } from './notifications.js'
import { Db } from './pool.js'
import { TelemetryQueries } from './queries.js'
import { QuarantineStore } from './quarantine.js'
import { type BatchJudge, DueAlertStore, RuleStore } from './rules.js'
import { ServiceStore } from './services.js'
import { SessionStore } from './sessions.js'
import { WebhookStore } from './webhooks.js'
import {
  type QuarantineInsert,
  type TelemetryBatch,
  type WriteResult,
  writeBatch,
} from './telemetry-write.js'

export type { FleetRow, Series, SeriesQuery } from './console.js'
export { parseNotice, STORED_CHANNEL, type StoredNotice } from './stored.js'
export {
  type ClaimedCommand,
  COMMAND_ID,
  COMMAND_STATUSES,
  type CommandRow,
  type CommandStatus,
  type NewCommand,
  RESEND,
} from './commands.js'
export {
  ALERT_EVENTS,
  ALERT_ID,
  ALERT_STATUSES,
  type AlertEventType,
  type AlertFilter,
  type AlertRaise,
  type AlertRow,
  type AlertStatus,
  type Clear,
  clearWith,
  EVENT_TYPES,
  EVENTS_CHANNEL,
  type EventType,
  OFFLINE,
  type OutboxEvent,
  type RaiseResult,
  raiseWith,
  SEVERITIES,
  type Severity,
  SUBJECT_KINDS,
  type Subject,
  type SubjectKind,
} from './alerts.js'
export type { Credential, DeviceRow, NewDevice, RetiredFilter, RetireResult } from './devices.js'
export { GAP_ID, type GapRow } from './gaps.js'
export { type Claim, IDEMPOTENCY_TTL_HOURS, IdempotencyStore } from './idempotency.js'
export type { ListenHandlers, Listener } from './notifications.js'
export { isKeyset, type Keyset, type Order, type Page } from './keyset.js'
export type { Aggregate, AggregateQuery, Latest, Point, PointsQuery, RangeQuery } from './queries.js'
export { QUARANTINE_ID, type QuarantineFilter, type QuarantineRow } from './quarantine.js'
export {
  type BatchJudge,
  type DueAlert,
  type Judgement,
  type LoadedDevice,
  type NewRule,
  type OpenGap,
  RULE_NAME,
  type RuleCondition,
  type RuleDef,
  type RuleRow,
  type RuleTrigger,
} from './rules.js'
export type { AdvisoryLock, ServiceBeat, ServiceRow } from './services.js'
export { NEVER_EXPIRES, type SessionRow } from './sessions.js'
export { type QuarantineInsert, TelemetryBatch, type WriteResult } from './telemetry-write.js'
export { type JsonProblem, jsonProblem, unstorable } from './text.js'
export {
  type Attempt,
  type AttemptRow,
  DELIVERY_STATUSES,
  type DeliveryFilter,
  type DeliveryRow,
  type DeliveryStatus,
  type DueDelivery,
  type NewWebhook,
  WEBHOOK_ID,
  type WebhookRow,
} from './webhooks.js'

/**
 * What the ingest needs of the store: one batch of readings and quarantined messages, in one transaction,
 * judged by the quality checks; and the checks' gaps and device alerts, which it sweeps and hands over.
 */
export interface BatchWriter {
  /** Throws PostgreSQL's error as is, for the caller to tell bad data from an outage. */
  writeBatch(batch: TelemetryBatch, quarantine: QuarantineInsert[], judge?: BatchJudge): Promise<WriteResult>
  readonly gaps: GapStore
  readonly dueAlerts: DueAlertStore
}

/**
 * PostgreSQL, embedded or external: the only place that writes SQL. One object per process (per ingest
 * thread), grouped by table or concern: `store.devices.get(id)`, `store.quarantine.list(filter)`. The modules
 * share one pool; LISTEN and the organizer's lock get connections of their own.
 */
export class Store implements BatchWriter {
  /** The devices' registry and credentials. */
  readonly devices: DeviceStore
  /** Telemetry reads: ranges, aggregates, latest values. */
  readonly queries: TelemetryQueries
  /** Quarantined messages and their replays (the ingest writes them with its batches). */
  readonly quarantine: QuarantineStore
  /** Persistent MQTT sessions' subscriptions. */
  readonly sessions: SessionStore
  /** Heartbeats of every process, and the organizer's lock. */
  readonly services: ServiceStore
  /** LISTEN/NOTIFY between processes. */
  readonly notifications: Notifications
  /** HTTP ingest's Idempotency-Key records. */
  readonly idempotency: IdempotencyStore
  /** The web console's reads: the fleet with latest values, charts' series. */
  readonly console: ConsoleQueries
  /** Downlink commands and their progress. */
  readonly commands: CommandStore
  /** Alerts of devices and services, and the events outbox their changes write. */
  readonly alerts: AlertStore
  /** Webhooks, and their deliveries of the outbox's events with each attempt. */
  readonly webhooks: WebhookStore
  /** The quality checks' user rules. */
  readonly rules: RuleStore
  /** Gaps in the devices' sequence numbers. */
  readonly gaps: GapStore
  /** The device alerts the quality checks want, until handed over. */
  readonly dueAlerts: DueAlertStore
  private readonly db: Db

  constructor(
    readonly url: string,
    private readonly log: Logger,
    /** Connections for ingest batches; the pool adds a few for everything else. */
    poolSize: number,
  ) {
    this.db = new Db(url, log, poolSize)
    this.devices = new DeviceStore(this.db)
    this.queries = new TelemetryQueries(this.db)
    this.quarantine = new QuarantineStore(this.db)
    this.sessions = new SessionStore(this.db)
    this.services = new ServiceStore(this.db)
    this.notifications = new Notifications(this.db, log)
    this.idempotency = new IdempotencyStore(this.db)
    this.console = new ConsoleQueries(this.db)
    this.commands = new CommandStore(this.db)
    this.alerts = new AlertStore(this.db)
    this.webhooks = new WebhookStore(this.db)
    this.rules = new RuleStore(this.db)
    this.gaps = new GapStore(this.db)
    this.dueAlerts = new DueAlertStore(this.db)
  }

  /** The pool itself, for tests that check what was stored; code outside the store goes through the modules. */
  get pool() {
    return this.db.pool
  }

  /** The versions the start applied; none if the database was up to date. */
  applied: number[] = []

  /** Applies pending migrations. */
  async start(): Promise<void> {
    this.applied = await this.migrate()
  }

  /** Ends the pool; listeners and locks are ended by whoever took them. */
  async stop(): Promise<void> {
    await this.db.end()
  }

  /** The versions applied now; none if the database was up to date. */
  migrate(): Promise<number[]> {
    return migrate(this.db, this.log)
  }

  async ping(): Promise<void> {
    await this.db.ping()
  }

  /** One ingest batch in one transaction (see telemetry-write.ts). */
  async writeBatch(
    batch: TelemetryBatch,
    quarantine: QuarantineInsert[],
    judge?: BatchJudge,
  ): Promise<WriteResult> {
    return writeBatch(await this.db.checkout(), batch, quarantine, judge)
  }
}
