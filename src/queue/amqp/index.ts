import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib'
import type { Logger } from 'pino'
import { IotError } from '../../errors.js'
import { Backoff, pause } from '../../lib/backoff.js'
import type { QuarantineReason } from '../../readings/index.js'
import { BatchWait, ConsumerBatch } from '../consumer.js'
import { GroupCommitQueue } from '../group.js'
import type { Batch, Consumer, Envelope, Queue, QueueStats, Transport } from '../types.js'

/** The durable quorum queue every gateway publishes to and every ingest consumes from. */
export const QUEUE_NAME = 'iotcore.telemetry'
/** Reconnect backoff after the broker goes away: capped so a restarted broker is found within seconds. */
const RECONNECT_MIN_MS = 250
const RECONNECT_MAX_MS = 5000
/** Unacked deliveries per consumer: two ingest batches of the default size, so the next is always ready. */
export const DEFAULT_PREFETCH = 10_000
/** An idle consumer's longest wait before it looks again (deliveries wake it before). */
const IDLE_WAIT_MS = 100
/** How often the queue depth is asked of the broker. */
const STATS_INTERVAL_MS = 1000

/**
 * The Queue on RabbitMQ, for several processes or machines. Gateways publish persistent messages to a durable
 * quorum queue on a confirm channel and ack the device only after the broker's confirm; ingest processes
 * consume with manual acks and a prefetch window and ack after their database commit. A lost connection is
 * re-established with backoff; messages unconfirmed at the loss are reported failed (their devices got no ack
 * and send again), deliveries unacked at the loss are redelivered by the broker (and deduplicated by the store).
 */
export class AmqpQueue extends GroupCommitQueue implements Queue {
  readonly kind = 'amqp' as const
  private conn: ChannelModel | undefined
  private pub: ConfirmChannel | undefined
  private connected = false
  private stopped = false
  private connecting: Promise<void> | undefined
  private readonly backoff = new Backoff(RECONNECT_MIN_MS, RECONNECT_MAX_MS)
  private depth = 0
  private lastError: string | undefined
  private statsTimer: NodeJS.Timeout | undefined
  private readonly consumers = new Set<AmqpConsumer>()
  /** The open group's messages, published together when it commits. */
  private staged: Envelope[] = []

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    readonly maxBytes = Number.POSITIVE_INFINITY,
    private readonly prefetch = DEFAULT_PREFETCH,
  ) {
    super()
  }

  async start(): Promise<void> {
    await this.connect()
    this.statsTimer = setInterval(() => this.refreshStats(), STATS_INTERVAL_MS)
    this.statsTimer.unref()
  }

  private connect(): Promise<void> {
    this.connecting ??= (async () => {
      for (;;) {
        if (this.stopped) return
        try {
          const conn = await amqp.connect(this.url)
          conn.on('error', (err) => this.log.warn({ err: err.message }, 'RabbitMQ connection error'))
          conn.on('close', () => this.lost(conn, 'connection closed'))
          const ch = await conn.createConfirmChannel()
          ch.on('error', (err) => this.log.warn({ err: err.message }, 'RabbitMQ channel error'))
          ch.on('close', () => this.lost(conn, 'channel closed'))
          await ch.assertQueue(QUEUE_NAME, { durable: true, arguments: { 'x-queue-type': 'quorum' } })
          this.conn = conn
          this.pub = ch
          this.connected = true
          this.backoff.reset()
          this.lastError = undefined
          this.log.info({ queue: QUEUE_NAME }, 'connected to RabbitMQ')
          for (const c of this.consumers)
            c.attach(conn).catch((err) => this.log.warn({ err: err.message }, 'consumer attach failed'))
          return
        } catch (err) {
          this.lastError = (err as Error).message
          if (this.backoff.failures === 0)
            this.log.warn({ err: this.lastError }, 'cannot reach RabbitMQ; retrying')
          await pause(this.backoff.next())
        }
      }
    })().finally(() => {
      this.connecting = undefined
    })
    return this.connecting
  }

  private lost(conn: ChannelModel, why: string): void {
    if (this.conn !== conn) return
    this.conn = undefined
    this.pub = undefined
    this.connected = false
    this.lastError = `RabbitMQ ${why}`
    for (const c of this.consumers) c.detach()
    if (this.stopped) return
    this.log.warn({ why }, 'lost RabbitMQ; reconnecting')
    conn.close().catch(() => {})
    this.connect().catch(() => {})
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.statsTimer) clearInterval(this.statsTimer)
    this.flush()
    const deadline = Date.now() + 10_000
    while (this.appending > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const c of this.consumers) await c.close()
    const conn = this.conn
    this.conn = undefined
    await conn?.close().catch(() => {})
  }

  protected admit(_env: Envelope): void {
    if (!this.connected)
      throw new IotError('IOT_ERR_QUEUE_UNAVAILABLE', this.lastError ?? 'not connected to RabbitMQ')
  }

  protected stage(env: Envelope): void {
    this.staged.push(env)
  }

  /** Publishes one group; one callback shared by its messages reports the group on the last confirm. */
  protected commit(_count: number, done: (err?: Error) => void): void {
    const envs = this.staged
    this.staged = []
    const ch = this.pub
    if (!ch) return done(new Error(this.lastError ?? 'not connected to RabbitMQ'))
    let remaining = envs.length
    let failed: Error | undefined
    const confirmed = (err: unknown) => {
      if (err && !failed) failed = err instanceof Error ? err : new Error(String(err))
      if (--remaining === 0) done(failed)
    }
    let published = 0
    try {
      for (const e of envs) {
        const headers: Record<string, unknown> = { d: e.deviceId, t: e.transport }
        if (e.topic !== undefined) headers.tp = e.topic
        if (e.idempotencyKey !== undefined) headers.ik = e.idempotencyKey
        // Every reading judged valid (Envelope.allValid); a message from an older gateway has no `v`.
        if (e.allValid) headers.v = 1
        if (e.rejected) {
          headers.rr = e.rejected.reason
          headers.rd = e.rejected.detail
        }
        ch.publish(
          '',
          QUEUE_NAME,
          e.payload,
          { persistent: true, messageId: e.id, timestamp: e.receivedAt, headers },
          confirmed,
        )
        published++
      }
    } catch (err) {
      // The channel closed under us: the rest is failed here; amqplib fails the published, unconfirmed ones.
      for (let i = published; i < envs.length; i++) confirmed(err)
    }
  }

  private async refreshStats(): Promise<void> {
    const ch = this.pub
    if (!ch) return
    try {
      const q = await ch.checkQueue(QUEUE_NAME)
      let unacked = 0
      for (const c of this.consumers) unacked += c.outstanding
      this.depth = q.messageCount + unacked
    } catch (err) {
      this.lastError = (err as Error).message
    }
  }

  stats(): QueueStats {
    let oldest = 0
    for (const c of this.consumers) {
      const t = c.oldestTimestamp()
      if (t > 0 && (oldest === 0 || t < oldest)) oldest = t
    }
    return {
      depth: this.depth,
      oldestAgeSeconds: oldest === 0 ? 0 : Math.max(0, (Date.now() - oldest) / 1000),
      bytes: 0,
      maxBytes: this.maxBytes,
      full: false,
      healthy: this.connected,
      detail: this.connected ? undefined : this.lastError,
    }
  }

  consumer(): Consumer {
    const c = new AmqpConsumer(this.prefetch, this.log, (x) => this.consumers.delete(x))
    this.consumers.add(c)
    if (this.conn)
      c.attach(this.conn).catch((err) => this.log.warn({ err: err.message }, 'consumer attach failed'))
    return c
  }
}

/** An AMQP batch's delivery: its messages, and the channel that delivered them (only it can ack them). */
type AmqpBatch = ConsumerBatch<{ channel: Channel; messages: ConsumeMessage[] }>

/** Deliveries buffered up to the prefetch window; `next` hands them out in batches. */
class AmqpConsumer implements Consumer {
  private channel: Channel | undefined
  private buffer: ConsumeMessage[] = []
  private readonly wait = new BatchWait()
  outstanding = 0

  constructor(
    private readonly prefetch: number,
    private readonly log: Logger,
    private readonly onClose: (c: AmqpConsumer) => void,
  ) {}

  async attach(conn: ChannelModel): Promise<void> {
    if (this.wait.closed) return
    const ch = await conn.createChannel()
    ch.on('error', (err) => this.log.warn({ err: err.message }, 'RabbitMQ consumer channel error'))
    ch.on('close', () => {
      if (this.channel === ch) this.detach()
    })
    await ch.prefetch(this.prefetch)
    // The channel is ours before consume(): the broker delivers a backlog at once, before consume() resolves,
    // and a delivery dropped here would stay unacked (and unprocessed) for as long as the channel lives.
    this.channel = ch
    this.buffer = []
    this.outstanding = 0
    await ch.consume(QUEUE_NAME, (msg) => {
      if (!msg || this.channel !== ch) return
      this.buffer.push(msg)
      this.outstanding++
      this.wait.wake()
    })
  }

  /** The channel is gone: its unacked deliveries go back to the broker, which redelivers them. */
  detach(): void {
    this.channel = undefined
    this.buffer = []
    this.outstanding = 0
  }

  oldestTimestamp(): number {
    const m = this.buffer[0]
    return m ? Number(m.properties.timestamp ?? 0) : 0
  }

  async next(max: number, waitMs: number): Promise<Batch | null> {
    if (!(await this.wait.fill(max, waitMs, IDLE_WAIT_MS, () => this.buffer.length))) return null
    const ch = this.channel
    if (!ch || this.buffer.length === 0) return this.next(max, waitMs)
    const messages = this.buffer.splice(0, max)
    const items = messages.map(decode)
    const redelivered = messages.reduce(
      (m, x) => Math.max(m, Number(x.properties.headers?.['x-delivery-count'] ?? 0)),
      0,
    )
    return new ConsumerBatch(this, { channel: ch, messages }, items, redelivered)
  }

  async ack(batch: AmqpBatch): Promise<void> {
    const { channel, messages } = batch.delivery
    if (channel !== this.channel) {
      // The channel that delivered these is gone; the broker redelivers them and the store dedups.
      return
    }
    for (const m of messages) channel.ack(m)
    this.outstanding -= messages.length
  }

  nack(batch: AmqpBatch): void {
    const { channel, messages } = batch.delivery
    if (channel !== this.channel) return
    for (const m of messages) channel.nack(m, false, true)
    this.outstanding -= messages.length
  }

  async close(): Promise<void> {
    this.wait.close()
    const ch = this.channel
    this.channel = undefined
    await ch?.close().catch(() => {})
    this.onClose(this)
  }
}

function decode(m: ConsumeMessage): Envelope {
  const h = m.properties.headers ?? {}
  const env: Envelope = {
    id: String(m.properties.messageId),
    deviceId: String(h.d),
    transport: String(h.t) as Transport,
    topic: h.tp === undefined ? undefined : String(h.tp),
    receivedAt: Number(m.properties.timestamp),
    payload: m.content,
    rejected: h.rr ? { reason: String(h.rr) as QuarantineReason, detail: String(h.rd ?? '') } : undefined,
  }
  if (h.ik !== undefined) env.idempotencyKey = String(h.ik)
  if (h.v === 1) env.allValid = true
  return env
}
