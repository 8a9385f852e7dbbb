import type pg from 'pg'
import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import { apiRow, LOCK_IDS } from './sql.js'

export const SEVERITIES = ['critical', 'major', 'minor', 'warning'] as const
export type Severity = (typeof SEVERITIES)[number]

/** active: the condition holds (or nobody said it ended); cleared: it ended, and this alert is closed for good. */
export const ALERT_STATUSES = ['active', 'cleared'] as const
export type AlertStatus = (typeof ALERT_STATUSES)[number]

export const SUBJECT_KINDS = ['device', 'service'] as const
export type SubjectKind = (typeof SUBJECT_KINDS)[number]

/** What an alert is about: a device by its id, or a service (an iotcore process or a part of one) by name. */
export interface Subject {
  kind: SubjectKind
  id: string
}

/**
 * The events an alert emits: when it opens, when it is acknowledged and when it is cleared. A bump (the same
 * condition seen again: count, last seen, severity, details) is no event, so that a device repeating a fault
 * every second costs a receiver one request, not one a second; GET /alerts shows the count.
 */
export const ALERT_EVENTS = ['alert.opened', 'alert.acknowledged', 'alert.cleared'] as const
export type AlertEventType = (typeof ALERT_EVENTS)[number]
/** Every event the outbox holds: the alerts', and a webhook's test event, which goes to that webhook alone. */
export const EVENT_TYPES = [...ALERT_EVENTS, 'webhook.test'] as const
export type EventType = (typeof EVENT_TYPES)[number]

/** NOTIFY channel on which every transaction that writes events announces them (payload: the last id). */
export const EVENTS_CHANNEL = 'iotcore_events'

/** Alert ids are a bigserial: anything else names no alert. */
export const ALERT_ID = /^\d{1,18}$/

/** One occurrence (or several) of a condition: opens the subject's alert of this type, or bumps the open one. */
export interface AlertRaise {
  subject: Subject
  type: string
  severity: Severity
  /** What the alert shows of the latest occurrence; a bump replaces them. */
  details?: Record<string, unknown>
  /** Occurrences this raise stands for; 1 when absent. */
  count?: number
  /**
   * When it was first and last observed, if not now: a failure seen while PostgreSQL was down is written once
   * the database is back, with the times it was seen.
   */
  firstSeen?: Date
  lastSeen?: Date
}

/** An alert as the API shows it. */
export interface AlertRow {
  id: string
  type: string
  severity: Severity
  /** The device it is about; null for a service's alert. */
  deviceId: string | null
  /** The service it is about; null for a device's alert. */
  service: string | null
  status: AlertStatus
  acknowledged: boolean
  acknowledgedAt: string | null
  firstSeen: string
  lastSeen: string
  clearedAt: string | null
  count: number
  details: Record<string, unknown>
}

/** A raise's outcome: the alert as it is now, and whether this raise opened it (else it bumped it). */
export interface RaiseResult extends AlertRow {
  opened: boolean
}

/** An event of the outbox, as the SSE streams send it and webhooks receive it (less `seq`). */
export interface OutboxEvent {
  /** Its place in the outbox: ids are committed in order (see emit). */
  seq: number
  /** The event id receivers dedupe by. */
  id: string
  type: EventType
  createdAt: string
  data: Record<string, unknown>
}

export interface AlertFilter {
  status?: AlertStatus
  acknowledged?: boolean
  severity?: Severity[]
  deviceId?: string
  service?: string
  type?: string
  limit: number
  /** By first seen, ties by id: desc is newest first. */
  order: Order
  after?: Keyset
}

const TIMES = ['acknowledgedAt', 'firstSeen', 'lastSeen', 'clearedAt'] as const

/** An alert's columns as AlertRow names them, of the table aliased `a`. */
const COLUMNS = `a.id::text, a.type, a.severity,
  CASE WHEN a.subject_kind = 'device' THEN a.subject_id END AS "deviceId",
  CASE WHEN a.subject_kind = 'service' THEN a.subject_id END AS service,
  a.status, a.acknowledged_at IS NOT NULL AS acknowledged, a.acknowledged_at AS "acknowledgedAt",
  a.first_seen AS "firstSeen", a.last_seen AS "lastSeen", a.cleared_at AS "clearedAt", a.count, a.details`

const alertRow = (x: Record<string, any>): AlertRow => {
  const { opened: _, ...row } = x
  return apiRow<AlertRow>(row, TIMES)
}

/** `alerts` and the events outbox: raising, bumping, acknowledging and clearing alerts, each change's event. */
export class AlertStore {
  constructor(private readonly db: Db) {}

  /**
   * Opens or bumps one alert per (subject, type) given, in one transaction. Batch-friendly (an ingest batch
   * raising for many devices): raises of one (subject, type) in the list count as one bump of their summed
   * count. Returns each alert as it is now.
   */
  raise(raises: AlertRaise | readonly AlertRaise[]): Promise<RaiseResult[]> {
    const list = isList(raises) ? raises : [raises]
    if (list.length === 0) return Promise.resolve([])
    return this.db.transaction((c) => raiseWith(c, list))
  }

  /** Clears the active alert of each (subject, type), where there is one; returns those it cleared. */
  clear(subject: Subject, type: string): Promise<AlertRow[]>
  clear(which: readonly Clear[]): Promise<AlertRow[]>
  clear(which: Subject | readonly Clear[], type?: string): Promise<AlertRow[]> {
    const list = Array.isArray(which)
      ? (which as readonly Clear[])
      : [{ subject: which as Subject, type: type! }]
    if (list.length === 0) return Promise.resolve([])
    return this.db.transaction((c) => clearWith(c, list))
  }

  async get(id: string): Promise<AlertRow | undefined> {
    if (!ALERT_ID.test(id)) return undefined
    const r = await this.db.query(`SELECT ${COLUMNS} FROM alerts a WHERE a.id = $1`, [id])
    return r.rows[0] ? alertRow(r.rows[0]) : undefined
  }

  /**
   * Acknowledges it (active or cleared); acknowledging it again changes nothing and emits nothing. Undefined
   * for an unknown id.
   */
  acknowledge(id: string): Promise<AlertRow | undefined> {
    return this.change(id, 'a.acknowledged_at IS NULL', 'acknowledged_at = now()', 'alert.acknowledged')
  }

  /** Clears it, for good; clearing a cleared alert changes nothing. Undefined for an unknown id. */
  clearById(id: string): Promise<AlertRow | undefined> {
    return this.change(id, `a.status = 'active'`, `status = 'cleared', cleared_at = now()`, 'alert.cleared')
  }

  private async change(
    id: string,
    when: string,
    set: string,
    event: AlertEventType,
  ): Promise<AlertRow | undefined> {
    if (!ALERT_ID.test(id)) return undefined
    return this.db.transaction(async (c) => {
      const r = await c.query(`UPDATE alerts a SET ${set} WHERE a.id = $1 AND ${when} RETURNING ${COLUMNS}`, [
        id,
      ])
      if (r.rows.length === 0) {
        const now = await c.query(`SELECT ${COLUMNS} FROM alerts a WHERE a.id = $1`, [id])
        return now.rows[0] ? alertRow(now.rows[0]) : undefined
      }
      const row = alertRow(r.rows[0])
      await emit(c, [alertEvent(event, row)])
      return row
    })
  }

  /**
   * A page of alerts, filtered. Ordered by first seen, which a bump does not move, so a page never repeats or
   * skips an alert bumped while a client pages; alerts_first_seen serves it, alerts_subject a subject's.
   */
  async list(f: AlertFilter): Promise<Page<AlertRow>> {
    const params: unknown[] = [
      f.status ?? null,
      f.acknowledged ?? null,
      f.severity ?? null,
      f.deviceId ?? null,
      f.service ?? null,
      f.type ?? null,
      f.limit + 1,
    ]
    let start = ''
    if (f.after) {
      params.push(f.after.at, f.after.id)
      start = `AND ${after('a.first_seen', 'a.id', f.order, '$8', '$9::int8')}`
    }
    const r = await this.db.query(
      `SELECT ${COLUMNS}, ${tsToUs('a.first_seen')} AS at FROM alerts a
       WHERE ($1::text IS NULL OR a.status = $1)
         AND ($2::bool IS NULL OR (a.acknowledged_at IS NOT NULL) = $2)
         AND ($3::text[] IS NULL OR a.severity = ANY ($3))
         AND ($4::text IS NULL OR (a.subject_kind = 'device' AND a.subject_id = $4))
         AND ($5::text IS NULL OR (a.subject_kind = 'service' AND a.subject_id = $5))
         AND ($6::text IS NULL OR a.type = $6) ${start}
       ${orderBy('a.first_seen', 'a.id', f.order)} LIMIT $7`,
      params,
    )
    return toPage(r.rows, f.limit, (x) => x.id, alertRow)
  }

  /** The subjects of `kind` with an active alert of `type`. */
  async activeSubjects(kind: SubjectKind, type: string): Promise<string[]> {
    const r = await this.db.query(
      `SELECT subject_id FROM alerts WHERE status = 'active' AND subject_kind = $1 AND type = $2`,
      [kind, type],
    )
    return r.rows.map((x) => x.subject_id)
  }

  /**
   * Devices silent for `offlineAfterSeconds` (plus `graceSeconds`, the ingest's lag: a reading still queued
   * is a sign of life not yet written) while someone watched (since `watchedSince`: silence while the platform
   * was down is not the device's) get an `offline` alert, at most `limit` per sweep, the longest silent first;
   * those that sent since, and those retired or deleted, get theirs cleared. A device that never sent is not
   * offline: it was never online.
   */
  sweepOffline(
    offlineAfterSeconds: number,
    graceSeconds: number,
    watchedSince: Date,
    limit: number,
  ): Promise<{ opened: AlertRow[]; cleared: AlertRow[] }> {
    return this.db.transaction(async (c) => {
      const silent = await c.query(
        `SELECT d.id, d.last_seen_at FROM devices d
         WHERE d.retired_at IS NULL AND d.last_seen_at IS NOT NULL
           AND greatest(d.last_seen_at, $3) < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.status = 'active' AND a.subject_kind = 'device'
                           AND a.subject_id = d.id AND a.type = $2)
         ORDER BY d.last_seen_at LIMIT $4`,
        [offlineAfterSeconds + graceSeconds, OFFLINE, watchedSince, limit],
      )
      const opened = await raiseWith(
        c,
        silent.rows.map((d) => ({
          subject: { kind: 'device', id: d.id },
          type: OFFLINE,
          severity: 'major',
          details: { lastSeenAt: d.last_seen_at.toISOString(), offlineAfterSeconds },
        })),
      )
      const back = await c.query(
        `UPDATE alerts a SET status = 'cleared', cleared_at = now()
         WHERE a.status = 'active' AND a.subject_kind = 'device' AND a.type = $2
           AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = a.subject_id AND d.retired_at IS NULL
                           AND d.last_seen_at < now() - make_interval(secs => $1))
         RETURNING ${COLUMNS}`,
        [offlineAfterSeconds, OFFLINE],
      )
      const cleared = back.rows.map(alertRow)
      await emit(
        c,
        cleared.map((a) => alertEvent('alert.cleared', a)),
      )
      return { opened, cleared }
    })
  }

  /** The last event id now committed: a stream starting here sends what comes after. */
  async lastEventSeq(): Promise<number> {
    const r = await this.db.query('SELECT coalesce(max(id), 0) AS n FROM events')
    return r.rows[0].n
  }

  /** Events after `seq`, oldest first, at most `limit`. */
  async eventsAfter(seq: number, limit: number): Promise<OutboxEvent[]> {
    // events.id, not id: a bare name in ORDER BY means the output column, here the uid.
    const r = await this.db.query(
      `SELECT id AS seq, uid::text AS id, type, created_at AS "createdAt", data FROM events
       WHERE events.id > $1 ORDER BY events.id LIMIT $2`,
      [seq, limit],
    )
    return r.rows.map((x) => ({ ...x, createdAt: x.createdAt.toISOString() }))
  }
}

/** Which alert to clear: a subject's active one of a type. */
export interface Clear {
  subject: Subject
  type: string
}

const isList = <T extends object>(x: T | readonly T[]): x is readonly T[] => Array.isArray(x)

/** The offline alert's type (IOTCORE_OFFLINE_AFTER). */
export const OFFLINE = 'offline'

const key = (kind: string, id: string, type: string) => `${kind}\u0000${id}\u0000${type}`

/**
 * AlertStore.raise inside a transaction of the caller's (the ingest's batch, say): the alert changes and their
 * events commit or roll back with it. It takes the events lock when it opens an alert (see emit).
 */
export async function raiseWith(c: pg.ClientBase, raises: readonly AlertRaise[]): Promise<RaiseResult[]> {
  if (raises.length === 0) return []
  // ON CONFLICT cannot touch one row twice in a statement: one input per (subject, type).
  const merged = new Map<string, AlertRaise & { details: Record<string, unknown>; count: number }>()
  for (const r of raises) {
    const k = key(r.subject.kind, r.subject.id, r.type)
    const m = merged.get(k)
    const count = r.count ?? 1
    if (!m) {
      merged.set(k, { ...r, details: r.details ?? {}, count })
      continue
    }
    m.count += count
    m.severity = r.severity
    m.details = r.details ?? {}
    if (r.firstSeen && (!m.firstSeen || r.firstSeen < m.firstSeen)) m.firstSeen = r.firstSeen
    if (r.lastSeen && (!m.lastSeen || r.lastSeen > m.lastSeen)) m.lastSeen = r.lastSeen
  }
  const rows = [...merged.values()]
  const r = await c.query(
    `INSERT INTO alerts AS a (subject_kind, subject_id, type, severity, details, count, first_seen, last_seen)
     SELECT i.k, i.s, i.t, i.sev, i.d::jsonb, i.n, coalesce(i.f, now()), coalesce(i.l, now())
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::timestamptz[],
                 $8::timestamptz[]) AS i(k, s, t, sev, d, n, f, l)
     ON CONFLICT (subject_kind, subject_id, type) WHERE status = 'active'
     DO UPDATE SET count = a.count + EXCLUDED.count, last_seen = greatest(a.last_seen, EXCLUDED.last_seen),
       severity = EXCLUDED.severity, details = EXCLUDED.details
     RETURNING ${COLUMNS}, a.xmax = 0 AS opened`,
    [
      rows.map((x) => x.subject.kind),
      rows.map((x) => x.subject.id),
      rows.map((x) => x.type),
      rows.map((x) => x.severity),
      rows.map((x) => JSON.stringify(x.details)),
      rows.map((x) => x.count),
      rows.map((x) => x.firstSeen ?? null),
      rows.map((x) => x.lastSeen ?? null),
    ],
  )
  // xmax is 0 on a row this statement inserted, and set on one it updated (it locked the row to update it).
  const out = r.rows.map((x): RaiseResult => ({ ...alertRow(x), opened: x.opened === true }))
  await emit(
    c,
    out.filter((a) => a.opened).map((a) => alertEvent('alert.opened', a)),
  )
  return out
}

/** AlertStore.clear inside a transaction of the caller's. */
export async function clearWith(c: pg.ClientBase, which: readonly Clear[]): Promise<AlertRow[]> {
  if (which.length === 0) return []
  const r = await c.query(
    `UPDATE alerts a SET status = 'cleared', cleared_at = now()
     FROM unnest($1::text[], $2::text[], $3::text[]) AS i(k, s, t)
     WHERE a.status = 'active' AND a.subject_kind = i.k AND a.subject_id = i.s AND a.type = i.t
     RETURNING ${COLUMNS}`,
    [which.map((x) => x.subject.kind), which.map((x) => x.subject.id), which.map((x) => x.type)],
  )
  const cleared = r.rows.map(alertRow)
  await emit(
    c,
    cleared.map((a) => alertEvent('alert.cleared', a)),
  )
  return cleared
}

/** An event to emit: its type, the alert it is about (null for a webhook test) and what it carries. */
export interface NewEvent {
  type: EventType
  alertId: string | null
  data: Record<string, unknown>
}

const alertEvent = (type: AlertEventType, alert: AlertRow): NewEvent => ({
  type,
  alertId: alert.id,
  data: { alert },
})

/**
 * Writes events into the outbox in the caller's transaction, each with a delivery for every webhook that
 * takes its type (or, with `onlyWebhook`, for that one alone: a test), and announces them on commit.
 *
 * The advisory lock, held until the transaction ends, makes the order in which event ids are taken the order
 * in which they commit: without it a transaction could take id 10, another id 11 and commit first, and a reader
 * that saw 11 would step over 10 for good. Only transactions that emit take it: a bump emits nothing.
 */
export async function emit(
  c: pg.ClientBase,
  events: readonly NewEvent[],
  onlyWebhook?: string,
): Promise<Array<{ seq: number; id: string; deliveryIds: string[] }>> {
  if (events.length === 0) return []
  await c.query('SELECT pg_advisory_xact_lock($1)', [LOCK_IDS.events])
  const r = await c.query(
    `WITH e AS (
       INSERT INTO events (type, alert_id, data)
       SELECT i.t, i.a, i.d::jsonb FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY AS i(t, a, d, n)
       ORDER BY i.n
       RETURNING id, uid, type, alert_id),
     d AS (
       INSERT INTO webhook_deliveries (webhook_id, event_id, alert_id)
       SELECT w.id, e.id, e.alert_id FROM e JOIN webhooks w
         ON CASE WHEN $4::int8 IS NULL THEN w.events IS NULL OR e.type = ANY (w.events) ELSE w.id = $4 END
       ORDER BY e.id, w.id
       RETURNING id, event_id)
     SELECT e.id AS seq, e.uid::text AS id,
       coalesce((SELECT array_agg(d.id::text ORDER BY d.id) FROM d WHERE d.event_id = e.id), '{}') AS "deliveryIds"
     FROM e ORDER BY e.id`,
    [
      events.map((e) => e.type),
      events.map((e) => e.alertId),
      events.map((e) => JSON.stringify(e.data)),
      onlyWebhook ?? null,
    ],
  )
  const last = r.rows[r.rows.length - 1].seq
  await c.query('SELECT pg_notify($1, $2)', [EVENTS_CHANNEL, String(last)])
  return r.rows
}
