import type { Logger } from 'pino'
import { RetryTimer } from '../lib/retry.js'
import type { Db, Dedicated } from './pool.js'

/** A lost LISTEN connection is opened again after this pause. */
const LISTEN_RETRY_MS = 2000
/** Channels are identifiers in the LISTEN statement, which takes no parameters. */
const CHANNEL = /^[a-z_][a-z0-9_]*$/

export interface ListenHandlers {
  /** A notification's payload, in the order they were committed. */
  notify(payload: string): void
  /** Listening again after the connection was lost: notifications sent meanwhile were missed. */
  resumed(): void
  /** Not listening (the connection was lost, or an attempt failed), until resumed(): notifications are missed. */
  lost?(): void
}

/** PostgreSQL LISTEN/NOTIFY: how one process tells the others that something changed. */
export class Notifications {
  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  /** Delivered to every listener on `channel` when the current transaction (here: this statement) commits. */
  async notify(channel: string, payload: string): Promise<void> {
    await this.db.query('SELECT pg_notify($1, $2)', [channel, payload])
  }

  /**
   * Listens on `channel` on a connection of its own until the listener is stopped, reconnecting whenever that
   * connection is lost. Resolves after the first attempt; a failed one is logged and retried like a loss.
   */
  async listen(channel: string, handlers: ListenHandlers): Promise<Listener> {
    if (!CHANNEL.test(channel)) throw new Error(`not a channel name: ${channel}`)
    const l = new Listener(this.db, this.log, channel, handlers)
    await l.connect()
    return l
  }
}

export class Listener {
  private session: Dedicated | undefined
  private readonly retry = new RetryTimer(LISTEN_RETRY_MS, async () => {
    if (await this.connect()) this.handlers.resumed()
  })
  private stopped = false

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly channel: string,
    private readonly handlers: ListenHandlers,
  ) {}

  /** True once listening; false if it failed, and another attempt is scheduled. */
  async connect(): Promise<boolean> {
    let s: Dedicated | undefined
    try {
      s = await this.db.dedicated(() => this.again())
      s.client.on('notification', (n) => {
        if (n.payload !== undefined) this.handlers.notify(n.payload)
      })
      await s.client.query(`LISTEN ${this.channel}`)
    } catch (err) {
      await s?.close()
      this.log.warn({ err: (err as Error).message, channel: this.channel }, 'cannot LISTEN; retrying')
      this.again()
      return false
    }
    if (this.stopped) {
      await s.close()
      return false
    }
    this.session = s
    return true
  }

  private again(): void {
    if (!this.retry.schedule()) return
    this.handlers.lost?.()
    this.session?.close()
    this.session = undefined
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.retry.stop()
    const s = this.session
    this.session = undefined
    await s?.close()
  }
}
