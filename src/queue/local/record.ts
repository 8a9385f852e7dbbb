import { QUARANTINE_REASONS } from '../../readings/index.js'
import { TRANSPORTS, type Envelope } from '../types.js'

/**
 * One queue entry on disk, in a fixed binary layout: a header, the strings, then the payload as received.
 * Cheaper than a general serializer on the append path, and it leaves the payload bytes untouched.
 *
 *   0  u8   format (1)
 *   1  f64  receivedAt (ms since the epoch)
 *   9  u8   transport (index in TRANSPORTS, an append-only list)
 *  10  u8   rejected reason (index in QUARANTINE_REASONS, an append-only list; 255: not rejected)
 *  11  u16  deviceId bytes
 *  13  u16  topic bytes (65535: no topic)
 *  15  u32  rejected detail bytes
 *  19  deviceId, topic, detail (UTF-8), then the payload to the end
 *
 * Format 2, only for an envelope with an idempotency key (format 1 stays byte for byte what it was):
 *  19  u16  idempotency key bytes
 *  21  deviceId, topic, detail, idempotency key (UTF-8), then the payload to the end
 *
 * Two flags in the format byte, clear in entries written before them (read as before):
 * - 0x80: the gateway judged every reading valid (Envelope.allValid);
 * - 0x40: the topic is the device's telemetry topic, `devices/<deviceId>/telemetry` (that of nearly every
 *   entry), and is not written: the topic length says 0 and no topic bytes follow.
 */
const FORMAT = 1
const KEYED = 2
const ALL_VALID = 0x80
const OWN_TOPIC = 0x40
const FLAGS = ALL_VALID | OWN_TOPIC
const TOPIC_HEAD = 'devices/'
const TOPIC_TAIL = '/telemetry'
const HEADER = 19
const NONE8 = 255
const NONE16 = 0xffff
const TRANSPORT_INDEX = new Map(TRANSPORTS.map((t, i) => [t, i]))
const REASON_INDEX = new Map(QUARANTINE_REASONS.map((r, i) => [r, i]))

/**
 * Telemetry topics seen, each with its device (or '' for a topic that is no device's telemetry topic): a
 * lookup costs a fraction of comparing the parts for every entry. Bounded: a stream of made-up topics (each
 * refused, but still queued for the quarantine) only restarts it.
 */
const topicDevice = new Map<string, string>()
const TOPIC_CACHE_MAX = 10_000

/** Whether `topic` is `devices/<deviceId>/telemetry`. */
function isOwnTopic(topic: string, deviceId: string): boolean {
  let device = topicDevice.get(topic)
  if (device === undefined) {
    const n = TOPIC_HEAD.length + deviceId.length
    device =
      topic.length === n + TOPIC_TAIL.length &&
      topic.startsWith(TOPIC_HEAD) &&
      topic.endsWith(TOPIC_TAIL) &&
      topic.slice(TOPIC_HEAD.length, n) === deviceId
        ? deviceId
        : ''
    if (topicDevice.size >= TOPIC_CACHE_MAX) topicDevice.clear()
    topicDevice.set(topic, device)
  }
  return device === deviceId
}

export function encodeRecord(e: Envelope): Buffer {
  const dLen = Buffer.byteLength(e.deviceId)
  const own = e.topic !== undefined && isOwnTopic(e.topic, e.deviceId)
  const tLen = e.topic === undefined || own ? 0 : Buffer.byteLength(e.topic)
  const detail = e.rejected?.detail ?? ''
  const rLen = detail.length === 0 ? 0 : Buffer.byteLength(detail)
  const kLen = e.idempotencyKey === undefined ? -1 : Buffer.byteLength(e.idempotencyKey)
  const header = kLen < 0 ? HEADER : HEADER + 2
  const buf = Buffer.allocUnsafe(header + dLen + tLen + rLen + Math.max(kLen, 0) + e.payload.length)
  buf[0] = (kLen < 0 ? FORMAT : KEYED) | (e.allValid ? ALL_VALID : 0) | (own ? OWN_TOPIC : 0)
  buf.writeDoubleLE(e.receivedAt, 1)
  buf[9] = TRANSPORT_INDEX.get(e.transport) ?? 0
  buf[10] = e.rejected ? (REASON_INDEX.get(e.rejected.reason) ?? NONE8) : NONE8
  buf.writeUInt16LE(dLen, 11)
  buf.writeUInt16LE(e.topic === undefined ? NONE16 : tLen, 13)
  buf.writeUInt32LE(rLen, 15)
  if (kLen >= 0) buf.writeUInt16LE(kLen, HEADER)
  let at = header
  at += buf.write(e.deviceId, at)
  if (tLen > 0) at += buf.write(e.topic!, at)
  if (rLen > 0) at += buf.write(detail, at)
  if (kLen > 0) at += buf.write(e.idempotencyKey!, at)
  // TypedArray#set: a plain memory copy, without Buffer#copy's argument handling.
  buf.set(e.payload, at)
  return buf
}

export function decodeRecord(buf: Buffer, id: string): Envelope {
  const format = buf[0] & ~FLAGS
  const keyed = format === KEYED
  if (format !== FORMAT && !keyed) throw new Error(`queue entry ${id} has unknown format ${buf[0]}`)
  const dLen = buf.readUInt16LE(11)
  const tRaw = buf.readUInt16LE(13)
  const rLen = buf.readUInt32LE(15)
  const kLen = keyed ? buf.readUInt16LE(HEADER) : 0
  let at = keyed ? HEADER + 2 : HEADER
  const deviceId = buf.toString('utf8', at, (at += dLen))
  let topic: string | undefined
  if (buf[0] & OWN_TOPIC) topic = TOPIC_HEAD + deviceId + TOPIC_TAIL
  else if (tRaw !== NONE16) topic = buf.toString('utf8', at, (at += tRaw))
  const detail = rLen > 0 ? buf.toString('utf8', at, (at += rLen)) : ''
  const idempotencyKey = keyed ? buf.toString('utf8', at, (at += kLen)) : undefined
  const reason = buf[10] === NONE8 ? undefined : QUARANTINE_REASONS[buf[10]]
  const env: Envelope = {
    id,
    deviceId,
    transport: TRANSPORTS[buf[9]],
    topic,
    receivedAt: buf.readDoubleLE(1),
    payload: buf.subarray(at),
    rejected: reason ? { reason, detail } : undefined,
  }
  if (idempotencyKey !== undefined) env.idempotencyKey = idempotencyKey
  if (buf[0] & ALL_VALID) env.allValid = true
  return env
}

/** receivedAt alone, for the age of the oldest entry. */
export function recordReceivedAt(buf: Buffer): number {
  return buf.readDoubleLE(1)
}
