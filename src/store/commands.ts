import { IotError } from '../errors.js'
import { after, type Keyset, type Order, orderBy, type Page, toPage, tsToUs } from './keyset.js'
import type { Db } from './pool.js'
import { apiRow } from './sql.js'

/**
 * Where a command stands: `queued` until a gateway process holding the device's connection claims it, `sent`
 * on that connection, `delivered` once the device took it (MQTT PUBACK), then `replied` (the device answered
 * ok) or `failed` (it answered error, refused it, or every send died with its connection), or `expired` (its
 * ttl ran out while it waited).
 */
export const COMMAND_STATUSES = ['queued', 'sent', 'delivered', 'replied', 'failed', 'expired'] as const
export type CommandStatus = (typeof COMMAND_STATUSES)[number]

/** A command as the API shows it. */
export interface CommandRow {
  id: string
  deviceId: string
  name: string
  params: Record<string, unknown>
  status: CommandStatus
  /** Sends so far: one per connection it went out on. */
  attempts: number
  /** Why it is not further along: the last send's connection closed, the device refused it, ... */
  error: string | null
  /** What the device answered. */
  result: unknown
  createdAt: string
  expiresAt: string
  sentAt: string | null
  deliveredAt: string | null
  repliedAt: string | null
}

export interface NewCommand {
  deviceId: string
  name: string
  params: Record<string, unknown>
  ttlSeconds: number
}

/** A command claimed for sending: what a gateway puts on the wire. */
export interface ClaimedCommand {
  id: string
  deviceId: string
  name: string
  params: Record<string, unknown>
}

/** Command ids are an int8 identity: digits. */
export const COMMAND_ID = /^\d{1,18}$/

const COLUMNS = `id::text, device_id AS "deviceId", name, params, status, attempts, last_error AS error, result,
  created_at AS "createdAt", expires_at AS "expiresAt", sent_at AS "sentAt", delivered_at AS "deliveredAt",
  replied_at AS "repliedAt"`
const TIMES = ['createdAt', 'expiresAt', 'sentAt', 'deliveredAt', 'repliedAt'] as const
const commandRow = (x: Record<string, any>) => apiRow<CommandRow>(x, TIMES)

/** Where every change that makes a command `queued` is announced, with its device's id. */
const CHANNEL = 'iotcore_commands'

/**
 * Asking a device to resend a range of its sequence (README, "Rules"): the command the ingest queues when a
 * batch opens a gap (src/quality/sequence.ts), for a device whose attributes hold `"resend": true`. A device
 * says it can by an attribute, as a device group is said (rules' `attributes`): set with the device, read in
 * SQL only when a gap opens, with no column or API field of its own, and true whatever protocol the device
 * speaks; its firmware's capability is the fleet's to state, as its model is.
 */
export const RESEND = {
  name: 'resend',
  /** The device attribute that says the device can: `{"resend": true}` (JSON true, nothing else). */
  attribute: 'resend',
  /**
   * A request may wait this long for the device: past it, what the device kept of the range is likely
   * overwritten by what it measured since, and the gap is left to its `sequence_gap` alert.
   */
  ttlSeconds: 3600,
  /**
   * At most this many of a device's resend commands are unanswered (queued, sent, or delivered within
   * ttlSeconds) at once. A device losing many readings (a link dropping every other message) would otherwise
   * get a command per gap, doubling the traffic of a link already failing, faster than it can answer. The
   * batch's gaps past the room are coalesced into the last command the room allows, one range from the
   * first of them to the last: the device resends what lies between too, which the dedup drops (same msgId),
   * so every gap is still asked for, once. With no room, a new gap is not asked for: its alert reports it.
   */
  maxOpen: 8,
} as const

/**
 * The part of a batch's statement (store/rules.ts) that queues `resend` commands for the gaps it opened,
 * given its bound parameters: the devices' keys and each gap's range still missing (`from`..`to`), a
 * device's gaps in the order found. `cte` is a data-modifying CTE named `resent`; `announce` an expression
 * that announces the devices it queued for, for the statement to select (a SELECT in WITH runs only if read).
 */
export function queueResends(pk: string, from: string, to: string): { cte: string; announce: string } {
  return {
    cte: `resent AS (
      INSERT INTO commands (device_id, name, params, expires_at)
      SELECT d.id, '${RESEND.name}', jsonb_build_object('from', min(x.a), 'to', max(x.b)),
        now() + make_interval(secs => ${RESEND.ttlSeconds})
      FROM (SELECT u.pk, u.a, u.b, row_number() OVER (PARTITION BY u.pk ORDER BY u.i) AS n
            FROM unnest(${pk}::int8[], ${from}::int8[], ${to}::int8[]) WITH ORDINALITY AS u(pk, a, b, i)) x
      JOIN (SELECT d.pk, d.id, ${RESEND.maxOpen} - (
              SELECT count(*) FROM commands c
              WHERE c.device_id = d.id AND c.name = '${RESEND.name}'
                AND c.status IN ('queued', 'sent', 'delivered')
                AND c.created_at > now() - make_interval(secs => ${RESEND.ttlSeconds})) AS room
            FROM devices d
            WHERE d.pk = ANY(${pk}::int8[]) AND d.attributes @> '{"${RESEND.attribute}": true}'
              AND d.retired_at IS NULL) d ON d.pk = x.pk
      WHERE d.room > 0
      GROUP BY d.id, least(x.n, d.room)
      ORDER BY d.id, min(x.n)
      RETURNING device_id)`,
    announce: `(SELECT count(pg_notify('${CHANNEL}', device_id))
      FROM (SELECT DISTINCT device_id FROM resent) r)`,
  }
}

/**
 * `commands`: created by the API (`resend` also by the ingest, queueResends), claimed and answered through
 * the gateways' dispatchers. Every change that makes a command `queued` is announced on `channel` with its
 * device's id, in the statement that makes it, so the process holding that device's connection sends it at
 * once.
 *
 * Claims are atomic (UPDATE ... WHERE status = 'queued' ... FOR UPDATE SKIP LOCKED): two processes, or two
 * connections of one device, never take the same command. The updates that follow a send name the status
 * they expect, so one that arrives late (a PUBACK after the connection's close was recorded) changes nothing
 * it should not.
 */
export class CommandStore {
  readonly channel = CHANNEL

  constructor(private readonly db: Db) {}

  /**
   * Queues a command for a live device and announces it. IOT_ERR_DEVICE_NOT_FOUND for a missing device,
   * IOT_ERR_DEVICE_RETIRED for a retired one (it cannot connect to take it).
   */
  async create(c: NewCommand): Promise<CommandRow> {
    let rows: Record<string, any>[]
    try {
      const r = await this.db.query(
        `WITH created AS (
           INSERT INTO commands (device_id, name, params, expires_at)
           SELECT id, $2, $3::jsonb, now() + make_interval(secs => $4) FROM devices
           WHERE id = $1 AND retired_at IS NULL
           RETURNING ${COLUMNS}
         )
         SELECT created.*, pg_notify($5, created."deviceId") FROM created`,
        [c.deviceId, c.name, JSON.stringify(c.params), c.ttlSeconds, this.channel],
      )
      rows = r.rows
    } catch (err) {
      // The device was deleted between the SELECT and the foreign key's check.
      if ((err as { code?: string }).code === '23503')
        throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', c.deviceId)
      throw err
    }
    if (rows.length === 0) {
      const d = await this.db.query('SELECT 1 FROM devices WHERE id = $1', [c.deviceId])
      throw new IotError(d.rows.length ? 'IOT_ERR_DEVICE_RETIRED' : 'IOT_ERR_DEVICE_NOT_FOUND', c.deviceId)
    }
    const { pg_notify: _, ...row } = rows[0]
    return commandRow(row)
  }

  /** The device's command with this id; undefined for another device's, or an id that is not one. */
  async get(deviceId: string, id: string): Promise<CommandRow | undefined> {
    if (!COMMAND_ID.test(id)) return undefined
    const r = await this.db.query(`SELECT ${COLUMNS} FROM commands WHERE id = $1 AND device_id = $2`, [
      id,
      deviceId,
    ])
    return r.rows[0] ? commandRow(r.rows[0]) : undefined
  }

  /**
   * A page of the device's commands by creation time (ties by id), of one status or all, `after` a page's
   * `next`. Served by commands_device (device_id, created_at, id).
   */
  async list(
    deviceId: string,
    limit: number,
    order: Order,
    after_?: Keyset,
    status?: CommandStatus,
  ): Promise<Page<CommandRow>> {
    const params: unknown[] = [deviceId, status ?? null, limit + 1]
    let start = ''
    if (after_) {
      params.push(after_.at, after_.id)
      start = `AND ${after('created_at', 'id', order, '$4', '$5::int8')}`
    }
    const r = await this.db.query(
      `SELECT ${COLUMNS}, ${tsToUs('created_at')} AS at FROM commands
       WHERE device_id = $1 AND ($2::text IS NULL OR status = $2) ${start}
       ${orderBy('commands.created_at', 'commands.id', order)} LIMIT $3`,
      params,
    )
    return toPage(r.rows, limit, (x) => x.id, commandRow)
  }

  /**
   * Claims up to `limit` of the device's waiting commands (queued, not expired), oldest first, for process
   * `by` to send: they become `sent`, with one more attempt. Rows another claim holds are skipped, not waited
   * for: that claim takes them.
   */
  async claim(deviceId: string, by: string, limit: number): Promise<ClaimedCommand[]> {
    const r = await this.db.query(
      `UPDATE commands c SET status = 'sent', sent_at = now(), sent_by = $2, attempts = c.attempts + 1
       FROM (SELECT id FROM commands WHERE device_id = $1 AND status = 'queued' AND expires_at > now()
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) w
       WHERE c.id = w.id
       RETURNING c.id, c.device_id AS "deviceId", c.name, c.params`,
      [deviceId, by, limit],
    )
    // RETURNING follows no order; ids are far below 2^53.
    return r.rows
      .sort((a, b) => Number(a.id) - Number(b.id))
      .map((x) => ({ id: String(x.id), deviceId: x.deviceId, name: x.name, params: x.params }))
  }

  /**
   * Undoes a claim whose command went out on no connection (the device was gone from this process after
   * all): queued again as it was, and announced, so a process that does hold the device's connection and lost
   * the claim to this one takes it now.
   */
  async unclaim(id: string, by: string): Promise<void> {
    await this.db.query(
      `WITH back AS (
         UPDATE commands SET status = 'queued', sent_by = NULL, attempts = attempts - 1,
           sent_at = CASE WHEN attempts = 1 THEN NULL ELSE sent_at END
         WHERE id = $1 AND status = 'sent' AND sent_by = $2
         RETURNING device_id
       )
       SELECT pg_notify($3, device_id) FROM back`,
      [id, by, this.channel],
    )
  }

  /** The device took it. Also from `queued`: taken on a connection whose close was recorded first. */
  async delivered(id: string): Promise<boolean> {
    const r = await this.db.query(
      `UPDATE commands SET status = 'delivered', delivered_at = now()
       WHERE id = $1 AND status IN ('queued', 'sent')`,
      [id],
    )
    return (r.rowCount ?? 0) > 0
  }

  /**
   * The device answered: `replied` for ok, `failed` for error, with its result (`result` JSON text, or null).
   * Only a command still open and, where `deviceId` is given, of that device: false otherwise. A device may
   * answer a command whose send was recorded as lost (queued again): it got it, and it is not sent again.
   */
  async replied(
    id: string,
    deviceId: string | null,
    ok: boolean,
    result: string | null,
    error: string | null,
  ): Promise<boolean> {
    if (!COMMAND_ID.test(id)) return false
    const r = await this.db.query(
      `UPDATE commands SET status = $3, replied_at = now(), delivered_at = coalesce(delivered_at, now()),
         result = $4::jsonb, last_error = $5, sent_by = NULL
       WHERE id = $1 AND ($2::text IS NULL OR device_id = $2) AND status IN ('queued', 'sent', 'delivered')`,
      [id, deviceId, ok ? 'replied' : 'failed', result, error],
    )
    return (r.rowCount ?? 0) > 0
  }

  /**
   * The connection process `by` sent it on closed before the device took it: queued again (and announced) for
   * the device's next connection, or `failed` once it was sent `maxAttempts` times.
   */
  async lost(id: string, by: string, reason: string, maxAttempts: number): Promise<void> {
    await this.db.query(
      `WITH back AS (
         UPDATE commands SET sent_by = NULL,
           status = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'queued' END,
           last_error = CASE WHEN attempts >= $4
             THEN 'sent ' || attempts || ' times, and each time the connection closed before the device took it: '
             ELSE '' END || $3
         WHERE id = $1 AND status = 'sent' AND sent_by = $2
         RETURNING device_id, status
       )
       SELECT pg_notify($5, device_id) FROM back WHERE status = 'queued'`,
      [id, by, reason, maxAttempts, this.channel],
    )
  }

  /** It cannot be delivered (the device refused it, or it cannot be sent to it): `failed`, with why. */
  async refused(id: string, reason: string): Promise<void> {
    await this.db.query(
      `UPDATE commands SET status = 'failed', last_error = $2, sent_by = NULL
       WHERE id = $1 AND status IN ('queued', 'sent')`,
      [id, reason],
    )
  }

  /** Every command process `by` still has `sent` goes back to the queue, announced (at its stop). */
  async release(by: string, reason: string): Promise<number> {
    const r = await this.db.query(
      `WITH back AS (
         UPDATE commands SET status = 'queued', sent_by = NULL, last_error = $2
         WHERE status = 'sent' AND sent_by = $1
         RETURNING device_id
       )
       SELECT pg_notify($3, device_id) FROM (SELECT DISTINCT device_id FROM back) d`,
      [by, reason, this.channel],
    )
    return r.rowCount ?? 0
  }

  /**
   * Commands `sent` by a process other than `me` that is gone (stopped, or silent for `silentSeconds`, or
   * forgotten): queued again and announced. Its connections went with it, and no PUBACK will come for them.
   */
  async reclaim(me: string, silentSeconds: number, reason: string): Promise<number> {
    const r = await this.db.query(
      `WITH back AS (
         UPDATE commands c SET status = 'queued', sent_by = NULL, last_error = $3
         WHERE c.status = 'sent' AND c.sent_by <> $1 AND NOT EXISTS (
           SELECT 1 FROM services s WHERE s.id = c.sent_by AND s.stopped_at IS NULL
             AND s.beat_at > now() - make_interval(secs => $2))
         RETURNING c.device_id
       )
       SELECT pg_notify($4, device_id) FROM (SELECT DISTINCT device_id FROM back) d`,
      [me, silentSeconds, reason, this.channel],
    )
    return r.rowCount ?? 0
  }

  /** Waiting commands past their ttl become `expired`; the number of them. */
  async expire(): Promise<number> {
    const r = await this.db.query(
      `UPDATE commands SET status = 'expired' WHERE status = 'queued' AND expires_at <= now()`,
    )
    return r.rowCount ?? 0
  }
}
