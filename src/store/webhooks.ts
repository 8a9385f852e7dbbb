import { emit, type EventType, type OutboxEvent } from './alerts.js'
import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import { apiRow } from './sql.js'

/** Webhook and delivery ids are bigserials: anything else names none. */
export const WEBHOOK_ID = /^\d{1,18}$/

export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const
/** pending: to be sent (again); delivered: a 2xx came back; failed: given up after the retry period. */
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number]

export interface WebhookRow {
  id: string
  url: string
  /** The event types it gets; null: every event. */
  events: EventType[] | null
  createdAt: string
  /** Until then deliveries are signed with the previous secret too (a rotation); null when none is kept. */
  previousSecretExpiresAt: string | null
}

export interface NewWebhook {
  url: string
  events: EventType[] | null
  secret: string
}

export interface AttemptRow {
  at: string
  /** The receiver's HTTP status; null when none came (refused, timed out). */
  statusCode: number | null
  error: string | null
  durationMs: number
}

export interface DeliveryRow {
  id: string
  eventId: string
  eventType: EventType
  alertId: string | null
  status: DeliveryStatus
  createdAt: string
  /** When the next attempt is due, while pending. */
  nextAttemptAt: string | null
  /** When it was delivered or given up. */
  finishedAt: string | null
  /** Every attempt, oldest first. */
  attempts: AttemptRow[]
}

export interface DeliveryFilter {
  status?: DeliveryStatus
  limit: number
  /** By creation, ties by id: desc is newest first. */
  order: Order
  after?: Keyset
}

/** A delivery handed to the deliverer, with what it needs to send it. */
export interface DueDelivery {
  id: string
  webhookId: string
  url: string
  /** Sign with each: the current secret first, then the previous one during a rotation. */
  secrets: string[]
  /** Attempts made before this one. */
  attempts: number
  createdAt: Date
  event: Omit<OutboxEvent, 'seq'>
}

/** What one attempt found. */
export interface Attempt {
  delivered: boolean
  statusCode: number | null
  error: string | null
  durationMs: number
}

const WEBHOOK_COLUMNS = `id::text, url, events, created_at AS "createdAt",
  CASE WHEN previous_expires_at > now() THEN previous_expires_at END AS "previousSecretExpiresAt"`
const webhookRow = (x: Record<string, any>) => apiRow<WebhookRow>(x, ['createdAt', 'previousSecretExpiresAt'])

/** An ISO 8601 UTC time with ms inside jsonb, as Date.toISOString() writes it. */
const isoInJson = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`

const DELIVERY_COLUMNS = `d.id::text, e.uid::text AS "eventId", e.type AS "eventType", d.alert_id::text AS "alertId",
  d.status, d.created_at AS "createdAt", CASE WHEN d.status = 'pending' THEN d.next_at END AS "nextAttemptAt",
  d.finished_at AS "finishedAt",
  coalesce((SELECT jsonb_agg(jsonb_build_object('at', ${isoInJson('t.at')}, 'statusCode', t.status_code,
              'error', t.error, 'durationMs', t.duration_ms) ORDER BY t.id)
            FROM webhook_attempts t WHERE t.delivery_id = d.id), '[]') AS attempts`
const deliveryRow = (x: Record<string, any>) =>
  apiRow<DeliveryRow>(x, ['createdAt', 'nextAttemptAt', 'finishedAt'])

/** `webhooks` and their deliveries from the events outbox (store/alerts.ts writes both with each event). */
export class WebhookStore {
  constructor(private readonly db: Db) {}

  async create(w: NewWebhook): Promise<WebhookRow> {
    const r = await this.db.query(
      `INSERT INTO webhooks (url, events, secret) VALUES ($1, $2, $3) RETURNING ${WEBHOOK_COLUMNS}`,
      [w.url, w.events, w.secret],
    )
    return webhookRow(r.rows[0])
  }

  /** Oldest first: there are few. */
  async list(): Promise<WebhookRow[]> {
    const r = await this.db.query(`SELECT ${WEBHOOK_COLUMNS} FROM webhooks ORDER BY webhooks.id`)
    return r.rows.map(webhookRow)
  }

  async get(id: string): Promise<WebhookRow | undefined> {
    if (!WEBHOOK_ID.test(id)) return undefined
    const r = await this.db.query(`SELECT ${WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1`, [id])
    return r.rows[0] ? webhookRow(r.rows[0]) : undefined
  }

  /** Removes it with its deliveries, pending ones included; false if there was none. */
  async delete(id: string): Promise<boolean> {
    if (!WEBHOOK_ID.test(id)) return false
    const r = await this.db.query('DELETE FROM webhooks WHERE id = $1', [id])
    return (r.rowCount ?? 0) > 0
  }

  /**
   * A new secret; the one it replaces keeps signing too (a second v1 in the signature) for `keepPreviousSeconds`,
   * so receivers can move to the new one without refusing deliveries meanwhile. Undefined for an unknown id.
   */
  async rotateSecret(
    id: string,
    secret: string,
    keepPreviousSeconds: number,
  ): Promise<WebhookRow | undefined> {
    if (!WEBHOOK_ID.test(id)) return undefined
    const r = await this.db.query(
      `UPDATE webhooks SET previous_secret = secret, secret = $2,
         previous_expires_at = now() + make_interval(secs => $3)
       WHERE id = $1 RETURNING ${WEBHOOK_COLUMNS}`,
      [id, secret, keepPreviousSeconds],
    )
    return r.rows[0] ? webhookRow(r.rows[0]) : undefined
  }

  /** Emits a `webhook.test` event for this webhook alone; undefined for an unknown id. */
  async test(id: string): Promise<{ eventId: string; deliveryId: string } | undefined> {
    if (!WEBHOOK_ID.test(id)) return undefined
    return this.db.transaction(async (c) => {
      // Locked so that a delete cannot remove it between the check and the delivery's insert.
      const w = await c.query('SELECT id FROM webhooks WHERE id = $1 FOR KEY SHARE', [id])
      if (w.rows.length === 0) return undefined
      const [e] = await emit(
        c,
        [
          {
            type: 'webhook.test',
            alertId: null,
            data: { webhookId: id, message: 'a test event from iotcore' },
          },
        ],
        id,
      )
      return { eventId: e.id, deliveryId: e.deliveryIds[0] }
    })
  }

  /** A page of one webhook's deliveries, with their attempts. */
  async deliveries(webhookId: string, f: DeliveryFilter): Promise<Page<DeliveryRow>> {
    const params: unknown[] = [webhookId, f.status ?? null, f.limit + 1]
    let start = ''
    if (f.after) {
      params.push(f.after.at, f.after.id)
      start = `AND ${after('d.created_at', 'd.id', f.order, '$4', '$5::int8')}`
    }
    const r = await this.db.query(
      `SELECT ${DELIVERY_COLUMNS}, ${tsToUs('d.created_at')} AS at
       FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
       WHERE d.webhook_id = $1 AND ($2::text IS NULL OR d.status = $2) ${start}
       ${orderBy('d.created_at', 'd.id', f.order)} LIMIT $3`,
      params,
    )
    return toPage(r.rows, f.limit, (x) => x.id, deliveryRow)
  }

  /**
   * Hands out up to `limit` deliveries due now, each the oldest pending one of its (webhook, alert): a later
   * event of an alert waits until the one before it is delivered or given up, so a receiver gets an alert's
   * events in order. Each is leased for `leaseSeconds` (its next attempt moved that far) so that no other
   * deliverer takes it meanwhile, and one whose deliverer died is taken again after it.
   */
  async claimDue(limit: number, leaseSeconds: number): Promise<DueDelivery[]> {
    const r = await this.db.query(
      `WITH due AS (
         SELECT d.id FROM webhook_deliveries d
         WHERE d.status = 'pending' AND d.next_at <= now()
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.status = 'pending'
                           AND p.webhook_id = d.webhook_id AND p.alert_id = d.alert_id AND p.id < d.id)
         ORDER BY d.id LIMIT $1 FOR UPDATE SKIP LOCKED)
       UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $2)
       FROM due, webhooks w, events e
       WHERE d.id = due.id AND w.id = d.webhook_id AND e.id = d.event_id
       RETURNING d.id::text, d.webhook_id::text AS "webhookId", w.url, w.secret,
         CASE WHEN w.previous_expires_at > now() THEN w.previous_secret END AS previous, d.attempts,
         d.created_at AS "createdAt", e.uid::text AS "eventId", e.type, e.created_at AS "eventCreatedAt", e.data`,
      [limit, leaseSeconds],
    )
    return r.rows
      .sort((a, b) => Number(a.id) - Number(b.id))
      .map((x) => ({
        id: x.id,
        webhookId: x.webhookId,
        url: x.url,
        secrets: x.previous ? [x.secret, x.previous] : [x.secret],
        attempts: x.attempts,
        createdAt: x.createdAt,
        event: { id: x.eventId, type: x.type, createdAt: x.eventCreatedAt.toISOString(), data: x.data },
      }))
  }

  /**
   * Records an attempt: delivered, or due again in `retryInMs`, or given up (failed) when that would be past
   * `retryForSeconds` after the delivery was made. Returns the delivery's status, or undefined if it is gone
   * (its webhook was deleted meanwhile).
   */
  async recordAttempt(
    deliveryId: string,
    a: Attempt,
    retryInMs: number,
    retryForSeconds: number,
  ): Promise<DeliveryStatus | undefined> {
    const r = await this.db.query(
      `WITH u AS (
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1, status = s.status,
           next_at = now() + make_interval(secs => $6::float8 / 1000),
           finished_at = CASE WHEN s.status <> 'pending' THEN now() END
         FROM (SELECT CASE WHEN $2::bool THEN 'delivered'
                 WHEN now() + make_interval(secs => $6::float8 / 1000) > created_at + make_interval(secs => $7)
                 THEN 'failed' ELSE 'pending' END AS status
               FROM webhook_deliveries WHERE id = $1) s
         WHERE d.id = $1 RETURNING d.id, d.status)
       INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
       SELECT u.id, $3, $4, $5 FROM u RETURNING (SELECT status FROM u)`,
      [deliveryId, a.delivered, a.statusCode, a.error, Math.round(a.durationMs), retryInMs, retryForSeconds],
    )
    return r.rows[0]?.status
  }

  /**
   * The receiver answered: its other pending deliveries, waiting out their backoff, are due now, so a receiver
   * that was down gets its backlog at once rather than each delivery at the end of its own backoff.
   */
  async hurry(webhookIds: readonly string[]): Promise<void> {
    if (webhookIds.length === 0) return
    await this.db.query(
      `UPDATE webhook_deliveries SET next_at = now()
       WHERE webhook_id = ANY ($1::int8[]) AND status = 'pending' AND next_at > now()`,
      [webhookIds],
    )
  }

  /** Removes deliveries finished, and events (and their attempts) no delivery needs, older than this. */
  async prune(olderThanSeconds: number): Promise<{ deliveries: number; events: number }> {
    return this.db.transaction(async (c) => {
      const d = await c.query(
        `DELETE FROM webhook_deliveries
         WHERE status <> 'pending' AND finished_at < now() - make_interval(secs => $1)`,
        [olderThanSeconds],
      )
      const e = await c.query(
        `DELETE FROM events e WHERE e.created_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)`,
        [olderThanSeconds],
      )
      return { deliveries: d.rowCount ?? 0, events: e.rowCount ?? 0 }
    })
  }
}
