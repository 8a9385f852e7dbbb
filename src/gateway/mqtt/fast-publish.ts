/**
 * The hot path's PUBLISH decoder: the common PUBLISH (no v5 properties) read straight from its bytes into one
 * reused object, with no parser state, no packet object and no copy of the payload.
 */
import type { IPublishPacket, QoS } from 'mqtt-packet'
import { equalBytes } from './validate.js'

const EMPTY = Buffer.alloc(0)

/**
 * The one PUBLISH object the fast path fills. Handlers read it synchronously and keep nothing of it (the
 * payload is a view of the socket's chunk, copied only where the queue stores it).
 */
const scratch: IPublishPacket = {
  cmd: 'publish',
  qos: 0,
  dup: false,
  retain: false,
  messageId: undefined,
  topic: '',
  payload: EMPTY,
}

/** What the decoder needs of the connection: its protocol level and its own telemetry topic. */
export interface PublishContext {
  version: number
  telemetryTopic: string
  telemetryTopicBytes: Buffer | null
}

/**
 * Decodes the PUBLISH in `data[pos, next)`, whose variable header starts at `body`, already checked by
 * validate.ts. §3.3.2 (both versions): topic (2-byte length + UTF-8), packet id if QoS > 0, then v5
 * properties. Returns the filled scratch packet, or undefined if it carries v5 properties (mqtt-packet decodes
 * those).
 */
export function decodePublish(
  c: PublishContext,
  data: Buffer,
  pos: number,
  body: number,
  next: number,
): IPublishPacket | undefined {
  const flags = data[pos] & 0x0f
  const qos = (flags >> 1) & 3
  const topicLen = (data[body] << 8) | data[body + 1]
  let at = body + 2 + topicLen
  let pid = 0
  if (qos > 0) {
    pid = (data[at] << 8) | data[at + 1]
    at += 2
  }
  if (c.version === 5) {
    if (data[at] !== 0) return undefined
    at++
  }
  scratch.qos = qos as QoS
  scratch.dup = (flags & 8) !== 0
  scratch.retain = (flags & 1) !== 0
  scratch.messageId = qos > 0 ? pid : undefined
  scratch.topic = topicAt(c, data, body + 2, topicLen)
  scratch.payload = data.subarray(at, next)
  return scratch
}

/**
 * The topic as a string; the device's own telemetry topic, by far the most common, without decoding. Compared
 * byte by byte: for a topic's few dozen bytes that costs less than Buffer.compare's argument checks.
 */
function topicAt(c: PublishContext, data: Buffer, at: number, len: number): string {
  const own = c.telemetryTopicBytes
  if (own !== null && equalBytes(data, at, at + len, own)) return c.telemetryTopic
  return data.toString('utf8', at, at + len)
}
