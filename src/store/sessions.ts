import { createHash } from 'node:crypto'
import type { Db } from './pool.js'

/** v5 Session Expiry Interval 0xFFFFFFFF, and what a v3.1.1 clean session 0 means: the session never expires. */
export const NEVER_EXPIRES = 0xffffffff

/**
 * What a session's key is known by outside the table: a NOTIFY payload is limited to 8,000 bytes, and a key
 * (device id + client id) is not. Equal keys give equal digests in every process.
 */
function sessionDigest(key: string): string {
  // 132 bits: two keys sharing a digest would only cost an unneeded DELETE (see gateway/mqtt/sessions.ts).
  return createHash('sha256').update(key).digest('base64url').slice(0, 22)
}

export interface SessionRow {
  /** topic filter -> granted QoS */
  subscriptions: Record<string, number>
  /** True once `expirySeconds` have passed since the last write or touch (never for NEVER_EXPIRES). */
  expired: boolean
}

/** `mqtt_sessions`: the subscriptions of MQTT sessions that outlive their connection (see gateway/mqtt/sessions.ts). */
export class SessionStore {
  /** Every save of a session is announced on this channel, with the digest of its key. */
  readonly channel = 'iotcore_mqtt_sessions'
  readonly digest = sessionDigest

  constructor(private readonly db: Db) {}

  async get(key: string): Promise<SessionRow | undefined> {
    const r = await this.db.query(
      `SELECT subscriptions,
         updated_at < now() - make_interval(secs => expiry_s) AND expiry_s <> $2 AS expired
       FROM mqtt_sessions WHERE client_key = $1`,
      [key, NEVER_EXPIRES],
    )
    return r.rows[0]
  }

  /** The digests of every stored session's key, expired or not. */
  async digests(): Promise<string[]> {
    const r = await this.db.query<{ client_key: string }>('SELECT client_key FROM mqtt_sessions')
    return r.rows.map((row) => sessionDigest(row.client_key))
  }

  /** Stores the session and, when that commits, announces its key's digest on `channel`. */
  async save(
    key: string,
    deviceId: string,
    subscriptions: Record<string, number>,
    expirySeconds: number,
  ): Promise<void> {
    await this.db.query(
      `WITH saved AS (
         INSERT INTO mqtt_sessions (client_key, device_id, subscriptions, expiry_s, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (client_key) DO UPDATE SET subscriptions = $3, expiry_s = $4, updated_at = now()
         RETURNING 1
       )
       SELECT pg_notify($5, $6) FROM saved`,
      [key, deviceId, subscriptions, expirySeconds, this.channel, sessionDigest(key)],
    )
  }

  /** Restarts the expiry (it counts from the disconnect), with the expiry the client asked for at the end. */
  async touch(key: string, expirySeconds: number): Promise<void> {
    await this.db.query('UPDATE mqtt_sessions SET updated_at = now(), expiry_s = $2 WHERE client_key = $1', [
      key,
      expirySeconds,
    ])
  }

  async delete(key: string): Promise<void> {
    await this.db.query('DELETE FROM mqtt_sessions WHERE client_key = $1', [key])
  }
}
