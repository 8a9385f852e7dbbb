import { DEVICE_CHANNEL } from '../devices/index.js'
import type { FleetRow, Listener, ListenHandlers, Store } from '../store/index.js'
import { EVENTS_CHANNEL, parseNotice, STORED_CHANNEL } from '../store/index.js'

/**
 * What a stream may carry. telemetry: devices' latest values as stored; status: a device created, changed,
 * retired or deleted; quarantine: messages added to the quarantine; ingest: readings stored per second;
 * alerts: alerts opened, acknowledged or cleared (read them with GET /alerts; GET /alerts/stream has each event).
 */
export const STREAM_TOPICS = ['telemetry', 'status', 'quarantine', 'ingest', 'alerts'] as const
export type StreamTopic = (typeof STREAM_TOPICS)[number]

/** How often what was announced is read and sent: a live page without a query per batch. */
const FLUSH_MS = 500
/** How often the ingest rate is sent. */
const INGEST_MS = 1000
/** A comment this often keeps proxies from closing an idle stream and finds clients that are gone. */
const PING_MS = 15_000
/** Devices read per query when many changed at once. */
const READ_CHUNK = 1000

/** One open stream, as the hub sees it (the route writes it out as Server-Sent Events). */
export interface StreamClient {
  readonly topics: ReadonlySet<StreamTopic>
  /** Only these devices' telemetry; undefined: every device's. */
  readonly devices: ReadonlySet<string> | undefined
  /** Queues an event; the client itself drops the connection when it cannot keep up. */
  send(event: string, data: string): void
  /** A comment line, which clients ignore. */
  ping(): void
  /** Ends the stream from the server's side (the hub stops). */
  end(): void
}

/**
 * The live streams of one API process. Every ingest batch announces on commit what it stored (STORED_CHANNEL)
 * and the device registry announces its changes (DEVICE_CHANNEL), whichever process made them; the hub
 * listens once for all its clients (from the first one on), reads what changed after the commit, and sends each
 * client what its page shows. It never sends a value that was not stored: it reads it from the database.
 */
export class StreamHub {
  private readonly clients = new Set<StreamClient>()
  private listening: Promise<Listener[]> | undefined
  private timer: NodeJS.Timeout | undefined
  private flushing = false
  private stopped = false
  /** Announced since the last flush: devices with new readings, devices changed, quarantine rows added. */
  private telemetry = new Set<string>()
  private status = new Set<string>()
  private quarantined = 0
  /** The alerts' events outbox was written since the last flush. */
  private alerts = false
  private storedSince = 0
  private lastIngest = Date.now()
  private lastPing = Date.now()

  constructor(
    private readonly store: Store,
    private readonly log: { warn(obj: object, msg: string): void },
  ) {}

  get size(): number {
    return this.clients.size
  }

  /**
   * Adds a client once the hub listens (from then on nothing committed is missed); returns its removal.
   * The client should read its page's data after this resolves, then apply the events.
   */
  async attach(client: StreamClient): Promise<() => void> {
    if (this.stopped) throw new Error('the stream hub is stopped')
    this.listening ??= this.listen()
    await this.listening
    this.clients.add(client)
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), FLUSH_MS)
      this.timer.unref()
    }
    return () => {
      this.clients.delete(client)
      if (this.clients.size === 0 && this.timer) {
        clearInterval(this.timer)
        this.timer = undefined
      }
    }
  }

  /** Ends every stream and stops listening. */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    for (const c of this.clients) c.end()
    this.clients.clear()
    const listeners = await this.listening?.catch(() => [])
    await Promise.all((listeners ?? []).map((l) => l.stop()))
  }

  private async listen(): Promise<Listener[]> {
    const handlers = (notify: (payload: string) => void): ListenHandlers => ({
      notify,
      // Notifications sent while the connection was down are lost: every page reads its data again.
      resumed: () => this.broadcast('resync', '{}'),
    })
    return Promise.all([
      this.store.notifications.listen(
        STORED_CHANNEL,
        handlers((p) => this.stored(p)),
      ),
      this.store.notifications.listen(
        DEVICE_CHANNEL,
        handlers((id) => {
          if (this.wanted('status')) this.status.add(id)
        }),
      ),
      this.store.notifications.listen(
        EVENTS_CHANNEL,
        handlers(() => {
          if (this.wanted('alerts')) this.alerts = true
        }),
      ),
    ])
  }

  private stored(payload: string): void {
    const n = parseNotice(payload)
    if (!n) return
    this.storedSince += n.stored
    this.quarantined += n.quarantined
    for (const id of n.ids) if (this.wantsTelemetry(id)) this.telemetry.add(id)
  }

  private wanted(topic: StreamTopic): boolean {
    for (const c of this.clients) if (c.topics.has(topic)) return true
    return false
  }

  private wantsTelemetry(id: string): boolean {
    for (const c of this.clients)
      if (c.topics.has('telemetry') && (!c.devices || c.devices.has(id))) return true
    return false
  }

  private broadcast(event: string, data: string, topic?: StreamTopic): void {
    for (const c of this.clients) if (topic === undefined || c.topics.has(topic)) c.send(event, data)
  }

  private tick(): void {
    const now = Date.now()
    if (now - this.lastPing >= PING_MS) {
      this.lastPing = now
      for (const c of this.clients) c.ping()
    }
    if (now - this.lastIngest >= INGEST_MS) {
      const data = JSON.stringify({ stored: this.storedSince, seconds: (now - this.lastIngest) / 1000 })
      this.storedSince = 0
      this.lastIngest = now
      this.broadcast('ingest', data, 'ingest')
    }
    if (this.quarantined > 0) {
      this.broadcast('quarantine', JSON.stringify({ added: this.quarantined }), 'quarantine')
      this.quarantined = 0
    }
    if (this.alerts) {
      this.broadcast('alerts', '{}', 'alerts')
      this.alerts = false
    }
    // One read at a time: what is announced meanwhile waits for the next tick.
    if (this.flushing || (this.telemetry.size === 0 && this.status.size === 0)) return
    this.flushing = true
    this.flush()
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'live stream: reading changes failed'))
      .finally(() => (this.flushing = false))
  }

  private async flush(): Promise<void> {
    const telemetry = [...this.telemetry]
    const status = [...this.status]
    this.telemetry.clear()
    this.status.clear()
    if (telemetry.length > 0) this.sendTelemetry(await this.read(telemetry))
    if (status.length > 0) {
      const rows = new Map((await this.read(status)).map((r) => [r.id, r]))
      // A device the fleet no longer holds (retired or deleted) comes as null: the page drops it.
      const data = JSON.stringify(status.map((id) => ({ id, device: rows.get(id) ?? null })))
      this.broadcast('status', data, 'status')
    }
  }

  private async read(ids: string[]): Promise<FleetRow[]> {
    const out: FleetRow[] = []
    for (let i = 0; i < ids.length; i += READ_CHUNK)
      out.push(...(await this.store.console.fleetRows(ids.slice(i, i + READ_CHUNK))))
    return out
  }

  private sendTelemetry(rows: FleetRow[]): void {
    if (rows.length === 0) return
    const updates = rows.map((r) => ({ id: r.id, lastSeenAt: r.lastSeenAt, latest: r.latest }))
    // Clients that follow every device share one serialisation.
    let all: string | undefined
    for (const c of this.clients) {
      if (!c.topics.has('telemetry')) continue
      if (!c.devices) {
        all ??= JSON.stringify(updates)
        c.send('telemetry', all)
        continue
      }
      const mine = updates.filter((u) => c.devices!.has(u.id))
      if (mine.length > 0) c.send('telemetry', JSON.stringify(mine))
    }
  }
}
