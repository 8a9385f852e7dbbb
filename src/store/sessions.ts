import type { Db } from './pool.js'

/** v5 Session Expiry Interval 0xFFFFFFFF, and what a v3.1.1 clean session 0 means: the session never expires. */
export const NEVER_EXPIRES = 0xffffffff

export interface SessionRow {
  /** topic filter -> granted QoS */
  subscriptions: Record<string, number>
  /** True once `expirySeconds` have passed since the last write or touch (never for NEVER_EXPIRES). */
  expired: boolean
}

/** `mqtt_sessions`: the subscriptions of MQTT sessions that outlive their connection (see gateway/mqtt/sessions.ts). */
export class SessionStore {
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

  async save(
    key: string,
    deviceId: string,
    subscriptions: Record<string, number>,
    expirySeconds: number,
  ): Promise<void> {
    await this.db.query(
      `INSERT INTO mqtt_sessions (client_key, device_id, subscriptions, expiry_s, updated_at)
       VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (client_key) DO UPDATE SET subscriptions = $3, expiry_s = $4, updated_at = now()`,
      [key, deviceId, subscriptions, expirySeconds],
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
