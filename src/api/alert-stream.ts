import type { ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { EventFeed } from '../store/event-feed.js'
import type { OutboxEvent, Store } from '../store/index.js'
/** A client resuming (Last-Event-ID) gets at most this many missed events; older ones are in GET /alerts. */
const MAX_REPLAY = 1000
/** A comment line this often keeps proxies from closing a quiet stream, and finds clients gone away. */
const KEEPALIVE_MS = 20_000
/** What EventSource waits before reconnecting after the stream ends. */
const RETRY_MS = 3000

interface Client {
  res: ServerResponse
  /** The last event sent to it. */
  sent: number
  /** While its missed events are read (Last-Event-ID): live ones wait here. */
  held: OutboxEvent[] | undefined
}

/**
 * The alert events as Server-Sent Events (GET /api/v1/alerts/stream), for every client of this process. The
 * events come from the process's EventFeed (store/event-feed.ts): from the outbox after their transaction
 * committed, in id order, none skipped; a client that reconnects with Last-Event-ID gets those it missed.
 */
export class AlertStream {
  private readonly clients = new Set<Client>()
  private unfollow: (() => void) | undefined
  private keepalive: NodeJS.Timeout | undefined

  constructor(
    private readonly feed: EventFeed,
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.unfollow = this.feed.follow((e) => this.broadcast(e))
    this.keepalive = setInterval(() => {
      for (const c of this.clients) c.res.write(': keepalive\n\n')
    }, KEEPALIVE_MS)
    this.keepalive.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.keepalive)
    this.unfollow?.()
    this.closeClients()
  }

  /** Ends every stream: the HTTP server can only close once they are. */
  closeClients(): void {
    for (const c of this.clients) c.res.end()
    this.clients.clear()
  }

  get size(): number {
    return this.clients.size
  }

  /**
   * Streams the events to `res` from now on, or from after `lastEventId` (a reconnecting EventSource sends the
   * id of the last event it got).
   */
  async attach(res: ServerResponse, lastEventId: number | undefined): Promise<void> {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // nginx buffers responses by default, which would hold events back.
      'x-accel-buffering': 'no',
    })
    // The first bytes tell the client the stream is open (and EventSource how long to wait to reconnect).
    res.write(`retry: ${RETRY_MS}\n\n`)
    const last = this.feed.last
    const resuming = lastEventId !== undefined && lastEventId < last
    const c: Client = { res, sent: resuming ? lastEventId : last, held: resuming ? [] : undefined }
    this.clients.add(c)
    res.on('close', () => this.clients.delete(c))
    if (!resuming) return
    try {
      const missed = await this.store.alerts.eventsAfter(lastEventId, MAX_REPLAY)
      for (const e of missed) this.send(c, e)
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read the events a stream missed; ending it')
      res.end()
      return
    }
    const held = c.held!
    c.held = undefined
    for (const e of held) this.send(c, e)
  }

  private broadcast(e: OutboxEvent): void {
    for (const c of this.clients) {
      if (c.held) c.held.push(e)
      else this.send(c, e)
    }
  }

  private send(c: Client, e: OutboxEvent): void {
    if (e.seq <= c.sent) return
    c.sent = e.seq
    if (!e.type.startsWith('alert.')) return
    const { seq, ...event } = e
    c.res.write(`id: ${seq}\nevent: ${e.type}\ndata: ${JSON.stringify(event)}\n\n`)
  }
}
