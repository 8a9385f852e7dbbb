import { randomBytes } from 'node:crypto'
import { IotError } from '../errors.js'
import type { Metrics } from '../metrics/index.js'
import type { Envelope, Queue, Transport } from '../queue/types.js'
import {
  LIMITS,
  type QuarantineReason,
  type Rejection,
  TOO_DEEP,
  deeperThan,
  judgePayload,
} from '../readings/index.js'

const bootId = randomBytes(4).toString('base64url')
let seq = 0
export const envelopeId = (prefix: string) => `${prefix}${bootId}${(seq++).toString(36)}`

export interface AcceptResult {
  accepted: number
  quarantined: number
  errors: Rejection[]
}

/**
 * The request-at-a-time gateways' path (HTTP, replay): judge the payload, append it durably, resolve once it
 * is on disk. A payload with no valid reading is refused (IOT_ERR_INVALID_READING, and quarantined unacked);
 * one with some is accepted and its bad readings quarantined.
 */
export async function acceptPayload(
  queue: Queue,
  metrics: Metrics,
  deviceId: string,
  transport: Transport,
  payload: Buffer,
  receivedAt: number,
  /** false for a replay: an operator's still-invalid correction is answered, not quarantined again */
  quarantineIfRefused = true,
  /** The HTTP request's Idempotency-Key: the ingest derives the ids of readings without ts nor msgId from it. */
  idempotencyKey?: string,
): Promise<AcceptResult> {
  const parsed = judgePayload(payload)
  const accepted = parsed.valid
  const quarantined = parsed.rejections.length
  metrics.received.inc({ transport }, accepted + quarantined)
  const env: Envelope = { id: envelopeId('h'), deviceId, transport, receivedAt, payload }
  if (idempotencyKey !== undefined) env.idempotencyKey = idempotencyKey
  if (accepted === 0) {
    const first = parsed.rejections[0]
    env.rejected = { reason: first.reason, detail: first.detail }
    metrics.rejected.inc({ transport, reason: first.reason }, quarantined)
    if (quarantineIfRefused) {
      try {
        await queue.enqueueAll([env])
      } catch {
        // An unreachable or full queue: the device is told its payload is refused either way.
      }
    }
    throw new IotError(
      first.reason === 'malformed_json' ? 'IOT_ERR_MALFORMED_JSON' : 'IOT_ERR_INVALID_READING',
      first.detail,
    )
  }
  if (quarantined === 0) env.allValid = true
  await queue.enqueueAll([env])
  metrics.acked.inc({ transport }, accepted + quarantined)
  return { accepted, quarantined, errors: parsed.rejections }
}

/**
 * The path of a device protocol that decodes its own format into a reading (OsmAnd, the founders' signal): the
 * decoded reading JSON is judged and appended as acceptPayload does, but a refused one is quarantined as the
 * device sent it (`raw`), which is what an operator needs to see. Resolves once the reading is durably queued;
 * throws IOT_ERR_INVALID_READING when it is refused.
 */
export async function acceptDecoded(
  queue: Queue,
  metrics: Metrics,
  deviceId: string,
  transport: Transport,
  reading: Buffer,
  raw: Buffer,
  receivedAt: number,
): Promise<void> {
  const parsed = judgePayload(reading)
  if (parsed.valid === 0) {
    const { reason, detail } = parsed.rejections[0]
    metrics.received.inc({ transport })
    quarantineRefused(queue, metrics, deviceId, transport, raw, reason, detail)
    throw new IotError('IOT_ERR_INVALID_READING', detail)
  }
  metrics.received.inc({ transport }, parsed.valid)
  const env: Envelope = { id: envelopeId(transport[0]), deviceId, transport, receivedAt, payload: reading }
  if (parsed.rejections.length === 0) env.allValid = true
  await queue.enqueueAll([env])
  metrics.acked.inc({ transport }, parsed.valid)
}

/**
 * A correction sent as parsed JSON (a replay's body) as the bytes a device would have sent. One too deep is
 * refused before JSON.stringify, which recurses, can overflow on it.
 */
export function correctedPayload(value: unknown): Buffer {
  if (deeperThan(value, LIMITS.maxDepth)) throw new IotError('IOT_ERR_INVALID_READING', TOO_DEEP)
  return Buffer.from(JSON.stringify(value))
}

/** Keeps a refused message (no ack was given) in the quarantine, best effort. */
export function quarantineRefused(
  queue: Queue,
  metrics: Metrics,
  deviceId: string,
  transport: Transport,
  payload: Buffer,
  reason: QuarantineReason,
  detail: string,
  topic?: string,
): void {
  metrics.rejected.inc({ transport, reason })
  const env: Envelope = {
    id: envelopeId(transport === 'http' ? 'h' : 'm'),
    deviceId,
    transport,
    topic,
    receivedAt: Date.now(),
    payload,
    rejected: { reason, detail },
  }
  try {
    queue.enqueueAll([env]).catch(() => {})
  } catch {
    // An unreachable queue refuses even this; it has logged why, and the device was told it was refused.
  }
}
