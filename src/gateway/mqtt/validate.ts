/**
 * Strict checks of one whole client packet (after CONNECT) on its bytes, before mqtt-packet parses it.
 * mqtt-packet is lenient: it ignores trailing bytes, takes properties that do not belong to the packet type
 * or appear twice, decodes ill-formed UTF-8 into U+FFFD, and takes packet identifier 0. A malformed packet
 * must be answered with a disconnect (v5: DISCONNECT with the reason code first), never taken.
 *
 * Spec references are to MQTT 5.0 unless marked v3.1.1; the v3.1.1 rules are the same where both exist.
 */
import { PacketType, ReasonCode } from './codes.js'
import { type Violation, bad, checkProperties, propertiesEnd } from './properties.js'
import { stringEnd, validUtf8 } from './utf8.js'

export type { Violation } from './properties.js'

const { malformedPacket: MALFORMED, protocolError: PROTOCOL_ERROR } = ReasonCode
const { publish, puback, pubrec, pubrel, pubcomp, subscribe, unsubscribe, pingreq, disconnect } = PacketType

/** [MQTT-3.4.2-1] / [MQTT-3.5.2-1] PUBACK and PUBREC reason codes; [MQTT-3.6.2-1] / [MQTT-3.7.2-1] PUBREL, PUBCOMP. */
const ACK_CODES = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
const REL_CODES = new Set([0x00, 0x92])
/** [MQTT-3.14.2-1] reason codes a client may send in DISCONNECT. */
const DISCONNECT_CODES = new Set([
  0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
])
const ACK_NAMES = ['', '', '', '', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP']

/**
 * Checks the packet in `buf[start, end)` (one whole frame, as framing found it; its variable header starts at
 * `pos`) for a connection of protocol level `version`. Returns undefined if it may be parsed. `ownTopic`: the
 * bytes of the connection's telemetry topic, a valid topic name by construction, which a PUBLISH to it (nearly
 * every one) need not have checked again.
 */
export function checkPacket(
  buf: Buffer,
  start: number,
  pos: number,
  end: number,
  version: number,
  ownTopic: Buffer | null = null,
): Violation | undefined {
  const type = buf[start] >> 4
  const flags = buf[start] & 0x0f
  const len = end - pos
  const v5 = version === 5
  switch (type) {
    case publish:
      return checkPublish(buf, pos, end, flags, v5, ownTopic)
    case puback:
    case pubrec:
    case pubrel:
    case pubcomp:
      return checkAck(buf, pos, end, type, v5)
    case subscribe:
    case unsubscribe:
      return checkFilters(buf, pos, end, type, v5)
    case pingreq:
      // §3.12 (both versions): PINGREQ has no variable header and no payload.
      return len === 0 ? undefined : bad(MALFORMED, 'PINGREQ with a body')
    case disconnect:
      if (!v5) return len === 0 ? undefined : bad(MALFORMED, 'DISCONNECT with a body')
      if (len === 0) return undefined
      if (!DISCONNECT_CODES.has(buf[pos])) return bad(PROTOCOL_ERROR, 'invalid DISCONNECT reason code')
      return len === 1 ? undefined : checkProperties(buf, pos + 1, end, disconnect, true)
    default:
      // CONNECT again, server-only packets and reserved types are refused by the packet handler.
      return undefined
  }
}

function checkPublish(
  buf: Buffer,
  pos: number,
  end: number,
  flags: number,
  v5: boolean,
  ownTopic: Buffer | null,
): Violation | undefined {
  const qos = (flags >> 1) & 3
  // [MQTT-3.3.1-2] DUP must be 0 for QoS 0; [MQTT-3.3.1-4] QoS 3 is malformed (mqtt-packet checks it too).
  if (qos === 3) return bad(MALFORMED, 'PUBLISH with QoS 3')
  if (qos === 0 && flags & 8) return bad(MALFORMED, 'DUP set on a QoS 0 PUBLISH')
  const topicEnd = stringEnd(buf, pos, end)
  if (topicEnd < 0) return bad(MALFORMED, 'PUBLISH topic runs past the packet')
  if (ownTopic === null || !equalBytes(buf, pos + 2, topicEnd, ownTopic)) {
    const topic = checkTopicName(buf, pos + 2, topicEnd)
    if (topic) return topic
  }
  pos = topicEnd
  if (qos > 0) {
    if (pos + 2 > end) return bad(MALFORMED, 'PUBLISH without its packet identifier')
    // [MQTT-2.2.1-3] (v3.1.1: MQTT-2.3.1-1) a QoS 1/2 PUBLISH carries a non-zero packet identifier.
    if ((buf[pos] | buf[pos + 1]) === 0) return bad(PROTOCOL_ERROR, 'packet identifier 0')
    pos += 2
  }
  return v5 ? checkProperties(buf, pos, end, publish, false) : undefined
}

function checkAck(buf: Buffer, pos: number, end: number, type: number, v5: boolean): Violation | undefined {
  const len = end - pos
  const name = ACK_NAMES[type]
  // v3.1.1 §3.4.1-3.7.1: the Remaining Length is exactly 2; v5 §3.4.2.1: at least the packet identifier.
  if (len < 2 || (!v5 && len !== 2)) return bad(MALFORMED, `${name} of ${len} bytes`)
  // The identifier of a PUBLISH, which is never 0 [MQTT-2.2.1-3].
  if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, `${name} for packet identifier 0`)
  if (len === 2) return undefined
  const codes = type === puback || type === pubrec ? ACK_CODES : REL_CODES
  if (!codes.has(buf[pos + 2])) return bad(PROTOCOL_ERROR, `invalid ${name} reason code`)
  if (len === 3) return undefined
  return checkProperties(buf, pos + 3, end, type, true)
}

/** SUBSCRIBE and UNSUBSCRIBE: a packet identifier, v5 properties, then at least one topic filter. */
function checkFilters(
  buf: Buffer,
  pos: number,
  end: number,
  type: number,
  v5: boolean,
): Violation | undefined {
  const name = type === subscribe ? 'SUBSCRIBE' : 'UNSUBSCRIBE'
  if (pos + 2 > end) return bad(MALFORMED, `${name} without its packet identifier`)
  // [MQTT-2.2.1-3] (v3.1.1: MQTT-2.3.1-1)
  if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, 'packet identifier 0')
  pos += 2
  if (v5) {
    const props = checkProperties(buf, pos, end, type, false)
    if (props) return props
    pos = propertiesEnd.at
  }
  // [MQTT-3.8.3-2] (v3.1.1: MQTT-3.8.3-3) and [MQTT-3.10.3-2]: at least one topic filter.
  if (pos === end) return bad(PROTOCOL_ERROR, `${name} without a topic filter`)
  while (pos < end) {
    const fEnd = stringEnd(buf, pos, end)
    // A SUBSCRIBE filter is followed by its options byte.
    if (fEnd < 0 || (type === subscribe && fEnd >= end))
      return bad(MALFORMED, `${name} topic filter runs past the packet`)
    const filter = checkFilter(buf, pos + 2, fEnd)
    if (filter) return filter
    if (type === unsubscribe) {
      pos = fEnd
      continue
    }
    const o = buf[fEnd]
    // [MQTT-3.8.3-5] (v3.1.1: MQTT-3.8.3-4, which also makes QoS 3 malformed) reserved option bits are 0;
    // v5 §3.8.3.1: QoS 3 and Retain Handling 3 are Protocol Errors.
    if (o & (v5 ? 0xc0 : 0xfc)) return bad(MALFORMED, 'reserved subscription option bits set')
    if ((o & 3) === 3) return bad(v5 ? PROTOCOL_ERROR : MALFORMED, 'subscription QoS 3')
    if (v5 && ((o >> 4) & 3) === 3) return bad(PROTOCOL_ERROR, 'Retain Handling 3')
    if (v5) {
      const shared = checkShared(buf, pos + 2, fEnd, (o & 4) !== 0)
      if (shared) return shared
    }
    pos = fEnd + 1
  }
  return undefined
}

/** [MQTT-4.8.2-1/-2] `$share/{name}/{filter}`: a non-empty name without wildcards, then a filter; [MQTT-3.8.3-4] no No Local. */
function checkShared(buf: Buffer, from: number, to: number, noLocal: boolean): Violation | undefined {
  const prefix = '$share/'
  if (to - from < prefix.length || buf.toString('latin1', from, from + prefix.length) !== prefix)
    return undefined
  const rest = buf.toString('utf8', from + prefix.length, to)
  const slash = rest.indexOf('/')
  const name = slash < 0 ? rest : rest.slice(0, slash)
  if (slash < 1 || /[+#]/.test(name) || slash === rest.length - 1)
    return bad(PROTOCOL_ERROR, 'malformed shared subscription')
  if (noLocal) return bad(PROTOCOL_ERROR, 'No Local on a shared subscription')
  return undefined
}

/** [MQTT-4.7.3-1] at least one character; [MQTT-1.5.4-1/-2] (v3.1.1: MQTT-1.5.3-1/-2) well-formed UTF-8 without U+0000. */
function checkFilter(buf: Buffer, from: number, to: number): Violation | undefined {
  if (to === from) return bad(PROTOCOL_ERROR, 'empty topic filter')
  return validUtf8(buf, from, to) ? undefined : bad(MALFORMED, 'topic filter is not valid UTF-8')
}

/** Whether `buf[from, to)` holds the bytes of `b`; by hand, for a topic's few dozen bytes (see fast-publish.ts). */
export function equalBytes(buf: Buffer, from: number, to: number, b: Buffer): boolean {
  if (to - from !== b.length) return false
  let i = 0
  while (i < b.length && buf[from + i] === b[i]) i++
  return i === b.length
}

/** [MQTT-3.3.2-1/-2] a PUBLISH topic is UTF-8 without wildcards; empty only with a Topic Alias (we allow none). */
export function checkTopicName(buf: Buffer, from: number, to: number): Violation | undefined {
  if (to === from) return bad(PROTOCOL_ERROR, 'empty topic name')
  if (!validUtf8(buf, from, to)) return bad(MALFORMED, 'topic name is not valid UTF-8')
  for (let i = from; i < to; i++) {
    if (buf[i] === 0x23 || buf[i] === 0x2b) return bad(PROTOCOL_ERROR, 'wildcard in a topic name')
  }
  return undefined
}
