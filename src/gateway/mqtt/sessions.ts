import type { Logger } from 'pino'
import type { Store } from '../../store/index.js'

export { NEVER_EXPIRES } from '../../store/index.js'

/**
 * MQTT sessions that outlive their connection and the process ([MQTT-3.1.2-4] clean session 0 in 3.1.1,
 * [MQTT-3.1.2-23] Session Expiry Interval > 0 in 5): the client's subscriptions, kept in PostgreSQL. Written
 * on SUBSCRIBE/UNSUBSCRIBE and at disconnect, never on the publish path.
 */
export class Sessions {
  /** Writes per client key run in order: a pool would let a later SUBSCRIBE's write land before an earlier one. */
  private readonly chains = new Map<string, Promise<unknown>>()

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** The subscriptions of a live session under this key; undefined if there is none or it expired. */
  async load(key: string): Promise<Map<string, number> | undefined> {
    await this.chains.get(key)
    const row = await this.store.sessions.get(key)
    if (!row) return undefined
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

  async discard(key: string): Promise<void> {
    await this.inOrder(key, () => this.store.sessions.delete(key))
  }

  save(key: string, deviceId: string, subs: Map<string, number>, expirySeconds: number): void {
    const snapshot = Object.fromEntries(subs)
    this.inOrder(key, () => this.store.sessions.save(key, deviceId, snapshot, expirySeconds)).catch((err) =>
      this.log.warn({ err: err.message, deviceId }, 'MQTT session not saved'),
    )
  }

  /** The expiry counts from the disconnect. */
  touch(key: string, expirySeconds: number): void {
    this.store.sessions.touch(key, expirySeconds).catch(() => {})
  }
}
