import type { Db } from './pool.js'

/** How long a key's answer is kept: the contract promises at least 24 h (docs/guarantees.md). */
export const IDEMPOTENCY_TTL_HOURS = 24
/**
 * A claim left unanswered this long is taken to be dead (its process killed mid-request) and may be taken
 * over by a retry. An HTTP ingest request holds its claim for the durable append, well under a second; if
 * the first one was only slow, both append, and the readings' ids (explicit, or derived from the key) store
 * them once.
 */
export const CLAIM_STALE_SECONDS = 30
/** Expired keys are deleted at most this often, by the claim that finds the time has come. */
const PRUNE_EVERY_MS = 10 * 60_000

/** What the first request with a key found. */
export type Claim =
  /** No live record: this request is the key's first (or the first since it expired); it must answer it. */
  | { kind: 'claimed' }
  /** Answered before, for the same body: answer the same again. */
  | { kind: 'replay'; status: number; body: string }
  /** Used before with another body. */
  | { kind: 'mismatch' }
  /** Another request with this key (and body) is being answered right now. */
  | { kind: 'in_progress' }

/**
 * `idempotency_keys`: the HTTP ingest's `Idempotency-Key` records, one per (device, key). A request claims its
 * key with one INSERT (the primary key decides between two at once: one wins, the other is told it is in
 * progress), answers, and records the answer; a retry within IDEMPOTENCY_TTL_HOURS gets the recorded answer.
 */
export class IdempotencyStore {
  private nextPrune = 0

  constructor(private readonly db: Db) {}

  async claim(deviceId: string, key: string, requestHash: string): Promise<Claim> {
    if (Date.now() >= this.nextPrune) {
      this.nextPrune = Date.now() + PRUNE_EVERY_MS
      // Best effort, off the request's path: a failed prune is retried at the next round.
      this.prune().catch(() => {
        this.nextPrune = 0
      })
    }
    // A record that expired, or a claim of the same body left by a dead request, is taken over in place.
    // Two tries: a record released between the INSERT and the SELECT is claimed on the second.
    for (let attempt = 0; attempt < 2; attempt++) {
      const won = await this.db.query(
        `INSERT INTO idempotency_keys (device_id, key, request_hash, claimed_at, expires_at)
         VALUES ($1, $2, $3, now(), now() + make_interval(hours => $4))
         ON CONFLICT (device_id, key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, claimed_at = now(), expires_at = EXCLUDED.expires_at,
               status = NULL, response = NULL
           WHERE idempotency_keys.expires_at <= now()
              OR (idempotency_keys.status IS NULL AND idempotency_keys.request_hash = EXCLUDED.request_hash
                  AND idempotency_keys.claimed_at < now() - make_interval(secs => $5))
         RETURNING 1`,
        [deviceId, key, requestHash, IDEMPOTENCY_TTL_HOURS, CLAIM_STALE_SECONDS],
      )
      if (won.rowCount === 1) return { kind: 'claimed' }
      const r = await this.db.query(
        'SELECT request_hash, status, response FROM idempotency_keys WHERE device_id = $1 AND key = $2',
        [deviceId, key],
      )
      const row = r.rows[0]
      if (!row) continue
      if (row.request_hash !== requestHash) return { kind: 'mismatch' }
      if (row.status === null) return { kind: 'in_progress' }
      return { kind: 'replay', status: row.status, body: row.response }
    }
    return { kind: 'in_progress' }
  }

  /** Records the answer of a claimed key, for its retries. */
  async complete(deviceId: string, key: string, status: number, body: string): Promise<void> {
    await this.db.query(
      'UPDATE idempotency_keys SET status = $3, response = $4 WHERE device_id = $1 AND key = $2',
      [deviceId, key, status, body],
    )
  }

  /** Gives a claimed key up (the request failed and changed nothing): a retry is judged afresh. */
  async release(deviceId: string, key: string): Promise<void> {
    await this.db.query('DELETE FROM idempotency_keys WHERE device_id = $1 AND key = $2 AND status IS NULL', [
      deviceId,
      key,
    ])
  }

  /** Deletes expired records; returns how many. */
  async prune(): Promise<number> {
    const r = await this.db.query('DELETE FROM idempotency_keys WHERE expires_at <= now()')
    return r.rowCount ?? 0
  }
}
