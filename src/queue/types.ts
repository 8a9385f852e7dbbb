import type { QuarantineReason } from '../readings/index.js'

/**
 * Append-only: a local queue entry stores a transport as its index in this list (queue/local/record.ts), so
 * entries written before an upgrade are read back by position. Add at the end; never remove or reorder.
 */
export const TRANSPORTS = ['mqtt', 'http', 'ws', 'teltonika', 'osmand', 'jsonl', 'signal', 'replay'] as const
export type Transport = (typeof TRANSPORTS)[number]

/**
 * The one internal message type every gateway produces: the device's bytes as received, with who sent them,
 * how and when. The ingest reads the payload by the same rule the gateway used to answer the device
 * (parsePayload, or for a payload judged all valid, readings/extract.ts, which makes the same of it).
 */
export interface Envelope {
  /** Unique per envelope, stable across redeliveries: dedups quarantine rows. */
  id: string
  deviceId: string
  transport: Transport
  topic?: string
  /** ms since the epoch, at the gateway */
  receivedAt: number
  payload: Buffer
  /**
   * The HTTP request's Idempotency-Key, when it had one: readings without ts nor msgId derive their ids from
   * it, so a retry of the request is stored once (readings/index.ts).
   */
  idempotencyKey?: string
  /**
   * Set when the gateway judged every reading in the payload valid (judgePayload found none to refuse): the
   * ingest may then read the payload by its fast path (readings/extract.ts), which reproduces what the rule
   * builds without judging again.
   */
  allValid?: boolean
  /** Set when the gateway refused the message (no ack) and only keeps it for the quarantine. */
  rejected?: { reason: QuarantineReason; detail: string }
}

/**
 * Receives the outcome of durable appends. A gateway connection implements it once and is handed a token per
 * message (a packet id), so a commit of thousands of messages creates no promise or closure per message.
 */
export interface AckSink {
  cork(): void
  /** `count`: the readings the acked message holds, for the metrics. */
  ack(token: number, count: number, err: Error | undefined): void
  uncork(): void
}

export interface QueueStats {
  depth: number
  oldestAgeSeconds: number
  bytes: number
  maxBytes: number
  /** True while the disk budget is spent: gateways stop acknowledging. */
  full: boolean
  healthy: boolean
  detail?: string
}

export interface Batch {
  readonly items: readonly Envelope[]
  /** How many times these items were handed out before (0 on first delivery in this process). */
  readonly attempt: number
  /** The items are safely stored: remove them from the queue. */
  ack(): Promise<void>
  /** Processing failed: hand the items out again later, oldest first. */
  nack(): void
}

export interface Consumer {
  /** Up to `max` items; waits up to `waitMs` for a first one to fill; null when stopped. */
  next(max: number, waitMs: number): Promise<Batch | null>
  close(): Promise<void>
}

/** The durable hand-off between gateways and ingest: LMDB on the local disk, or RabbitMQ. */
export interface Queue {
  readonly kind: 'local' | 'amqp'
  start(): Promise<void>
  stop(): Promise<void>
  /**
   * Appends durably; `sink.ack(token)` runs once the message is on disk (or confirmed by the broker).
   * Throws IOT_ERR_QUEUE_FULL when the disk budget is spent.
   */
  enqueue(env: Envelope, sink: AckSink, token: number, count: number): void
  /** Same, as a promise, for callers that handle one request at a time (HTTP). */
  enqueueAll(envs: Envelope[]): Promise<void>
  /** Messages whose durable append has not yet completed: a graceful stop waits for them. */
  readonly appending: number
  consumer(): Consumer
  stats(): QueueStats
}
