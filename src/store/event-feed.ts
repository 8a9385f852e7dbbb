import type { Logger } from 'pino'
import { EVENTS_CHANNEL, type OutboxEvent } from './alerts.js'
import type { Store } from './index.js'
import type { Listener } from './notifications.js'

/** Events read from the outbox at a time. */
const READ_BATCH = 500

/** Takes each event once, in id order; it must not throw nor wait (it is called in the read loop). */
export type EventSink = (e: OutboxEvent) => void

/**
 * The outbox's events as they commit, for every reader in this process (the SSE streams, the MQTT operator
 * topic): one LISTEN per process, so an alert raised by any process reaches the readers of every process. On
 * each announcement (and after the LISTEN connection was lost and is back) it reads the events after the last
 * one it read, in id order, which is commit order (alerts.ts, emit), so none is skipped and none is handed twice.
 */
export class EventFeed {
  /** The last event read: every sink following then has been handed each one up to it. */
  last = 0
  private readonly sinks = new Set<EventSink>()
  private listener: Listener | undefined
  private listening = false
  private reading: Promise<void> | undefined
  private again = false

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.last = await this.store.alerts.lastEventSeq()
    this.listener = await this.store.notifications.listen(EVENTS_CHANNEL, {
      notify: () => this.read(),
      resumed: () => {
        this.listening = true
        this.read()
      },
      lost: () => {
        this.listening = false
      },
    })
    this.listening = true
    // An event committed between the first read of the last id and the LISTEN was announced unheard.
    this.read()
  }

  async stop(): Promise<void> {
    await this.listener?.stop()
    this.listening = false
    await this.reading
    this.sinks.clear()
  }

  /** Hands `sink` every event read from now on; returns the function that stops it. */
  follow(sink: EventSink): () => void {
    this.sinks.add(sink)
    return () => this.sinks.delete(sink)
  }

  /** While not listening, events are announced unheard: they reach the sinks once the LISTEN is back. */
  health(): { ok: boolean; lastEvent: number; detail?: string } {
    return this.listening
      ? { ok: true, lastEvent: this.last }
      : { ok: false, lastEvent: this.last, detail: 'not listening for events; retrying' }
  }

  /** Reads what was committed since the last read; one read at a time, another after it if asked meanwhile. */
  private read(): void {
    if (this.reading) {
      this.again = true
      return
    }
    this.reading = (async () => {
      do {
        this.again = false
        try {
          let batch: OutboxEvent[]
          do {
            batch = await this.store.alerts.eventsAfter(this.last, READ_BATCH)
            for (const e of batch) this.hand(e)
          } while (batch.length === READ_BATCH)
        } catch (err) {
          // The next announcement (or the listener coming back) reads again from the same place.
          this.log.warn({ err: (err as Error).message }, 'cannot read the alert events')
        }
      } while (this.again)
    })().finally(() => {
      this.reading = undefined
    })
  }

  private hand(e: OutboxEvent): void {
    this.last = e.seq
    for (const sink of this.sinks) {
      try {
        sink(e)
      } catch (err) {
        this.log.error({ err, event: e.id }, 'an event reader failed')
      }
    }
  }
}
