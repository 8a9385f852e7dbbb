import type { Logger } from 'pino'
import { RetryTimer } from '../../lib/retry.js'
import type { Listener, Store } from '../../store/index.js'

export { NEVER_EXPIRES } from '../../store/index.js'

/** After a failed reload of the stored keys, the next attempt (meanwhile every clean start asks the database). */
const RELOAD_RETRY_MS = 2000

/**
 * MQTT sessions that outlive their connection and the process ([MQTT-3.1.2-4] clean session 0 in 3.1.1,
 * [MQTT-3.1.2-23] Session Expiry Interval > 0 in 5): the client's subscriptions, kept in PostgreSQL. Written
 * on SUBSCRIBE/UNSUBSCRIBE and at disconnect, never on the publish path.
 *
 * A clean start must discard any session kept under its key (v3.1.1 [MQTT-3.1.2-6], v5 [MQTT-3.1.2-4]), one saved
 * before a restart or by another gateway process included. Most clients never keep one, and a DELETE per
 * CONNECT would cost a round trip each, and in a reconnect storm a pool grown to its maximum of backends. So
 * this process knows which keys may have a stored session: the digests of all stored keys, read at start,
 * plus every key saved since, here or anywhere (each save is announced by NOTIFY, heard here too). A key it
 * does not know has no stored session, and its clean start needs no DELETE. Knowledge errs one way only: a
 * key deleted elsewhere stays known (its next clean start deletes nothing, harmlessly), and while the LISTEN
 * connection is down, until the keys are read again, every clean start asks the database as if all were known.
 *
 * What it leaves open: a save made by another process is known here once its notification arrives, a few
 * milliseconds after it commits. A client that reconnects with a clean start to this process within that
 * time, after a session-keeping connection to the other, keeps the old session. A DELETE on every clean start
 * would not close that window either: it would race the other process's save, which that process does not
 * await before its CONNACK.
 */
export class Sessions {
  /** Writes per client key run in order: a pool would let a later SUBSCRIBE's write land before an earlier one. */
  private readonly chains = new Map<string, Promise<unknown>>()
  /** Digests of the keys that may have a stored session (see above). */
  private readonly stored = new Set<string>()
  /** True while `stored` holds every key with a stored session: listening, and the keys read since. */
  private complete = false
  /** Counts the losses of the LISTEN connection: a read of the keys begun before the last one is not enough. */
  private losses = 0
  private listening = false
  private listener: Listener | undefined
  private readonly retry = new RetryTimer(RELOAD_RETRY_MS, () => this.reload())
  private stopped = false

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /**
   * Listens for saves first, then reads the stored keys: a save made in between is heard, not missed. Never
   * fails: until both are done, every clean start asks the database.
   */
  async start(): Promise<void> {
    this.listening = true
    const listener = await this.store.notifications.listen(this.store.sessions.channel, {
      notify: (digest) => this.stored.add(digest),
      lost: () => {
        this.listening = false
        this.complete = false
        this.losses++
      },
      resumed: () => {
        this.listening = true
        this.reload()
      },
    })
    if (this.stopped) return listener.stop()
    this.listener = listener
    await this.reload()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.retry.stop()
    await this.listener?.stop()
    // The writes already asked for (a disconnect's touch) land before the store closes.
    await Promise.all(this.chains.values())
  }

  /** Adds every stored key; complete if the LISTEN connection was up throughout. */
  private async readKeys(): Promise<void> {
    const losses = this.losses
    for (const d of await this.store.sessions.digests()) this.stored.add(d)
    if (this.listening && losses === this.losses) this.complete = true
  }

  private async reload(): Promise<void> {
    if (this.stopped) return
    await this.readKeys().catch((err) => {
      this.log.warn({ err: err.message }, 'MQTT session keys not read; every clean start asks the database')
      this.retry.schedule()
    })
  }

  /** False only if no session can be stored under this key, here or by another process. */
  mayExist(key: string): boolean {
    return !this.complete || this.chains.has(key) || this.stored.has(this.store.sessions.digest(key))
  }

  /** The subscriptions of a live session under this key; undefined if there is none or it expired. */
  async load(key: string): Promise<Map<string, number> | undefined> {
    await this.chains.get(key)
    const row = await this.store.sessions.get(key)
    if (!row) return undefined
    this.stored.add(this.store.sessions.digest(key))
    if (row.expired) {
      await this.discard(key)
      return undefined
    }
    return new Map(Object.entries(row.subscriptions))
  }

  private inOrder<T>(key: string, write: () => Promise<T>): Promise<T> {
    const run = (this.chains.get(key) ?? Promise.resolve()).then(write, write)
    const tail = run.catch(() => {})
    this.chains.set(key, tail)
    tail.then(() => {
      if (this.chains.get(key) === tail) this.chains.delete(key)
    })
    return run
  }

  /** Deletes the session stored under this key, if there can be one; resolves at once if not. */
  async discard(key: string): Promise<void> {
    if (!this.mayExist(key)) return
    // Forgotten before the DELETE is sent: a save committed after it runs is announced after this, and known
    // again. Remembered again if the DELETE fails, as the row may still be there.
    const digest = this.store.sessions.digest(key)
    this.stored.delete(digest)
    try {
      await this.inOrder(key, () => this.store.sessions.delete(key))
    } catch (err) {
      this.stored.add(digest)
      throw err
    }
  }

  save(key: string, deviceId: string, subs: Map<string, number>, expirySeconds: number): void {
    const snapshot = Object.fromEntries(subs)
    this.stored.add(this.store.sessions.digest(key))
    this.inOrder(key, () => this.store.sessions.save(key, deviceId, snapshot, expirySeconds)).catch((err) =>
      this.log.warn({ err: err.message, deviceId }, 'MQTT session not saved'),
    )
  }

  /** The expiry counts from the disconnect. */
  touch(key: string, expirySeconds: number): void {
    this.inOrder(key, () => this.store.sessions.touch(key, expirySeconds)).catch(() => {})
  }
}
