/**
 * Strict checks of one whole client packet (after CONNECT) on its bytes, before mqtt-packet parses it.
 * mqtt-packet is lenient: it ignores trailing bytes, takes properties that do not belong to the packet type
 * or appear twice, decodes ill-formed UTF-8 into U+FFFD, and takes packet identifier 0. A malformed packet
 * must be answered with a disconnect (v5: DISCONNECT with the reason code first), never taken.
 *
 * Spec references are to MQTT 5.0 unless marked v3.1.1; the v3.1.1 rules are the same where both exist.
 */

/** Malformed Packet / Protocol Error, the v5 reason codes a violation is answered with. */
export const MALFORMED = 0x81
export const PROTOCOL_ERROR = 0x82

export interface Violation {
  rc: number
  why: string
}

const PUBLISH = 3
const PUBACK = 4
const PUBREC = 5
const PUBREL = 6
const PUBCOMP = 7
const SUBSCRIBE = 8
const UNSUBSCRIBE = 10
const PINGREQ = 12
const DISCONNECT = 14

const BYTE = 1
const INT2 = 2
const INT4 = 4
const VBI = 5
const UTF8 = 6
const BINARY = 7
const PAIR = 8

/**
 * Properties a client may send after CONNECT: identifier -> [data type, packet types allowed in (bit mask)]
 * (MQTT 5 §2.2.2.2, table 2-4). Subscription Identifier is tolerated in PUBLISH as brokers do; it is ignored.
 */
const PROPS = new Map<number, [number, number]>([
  [0x01, [BYTE, 1 << PUBLISH]], // Payload Format Indicator
  [0x02, [INT4, 1 << PUBLISH]], // Message Expiry Interval
  [0x03, [UTF8, 1 << PUBLISH]], // Content Type
  [0x08, [UTF8, 1 << PUBLISH]], // Response Topic
  [0x09, [BINARY, 1 << PUBLISH]], // Correlation Data
  [0x0b, [VBI, (1 << PUBLISH) | (1 << SUBSCRIBE)]], // Subscription Identifier
  [0x11, [INT4, 1 << DISCONNECT]], // Session Expiry Interval
  [0x1c, [UTF8, 1 << DISCONNECT]], // Server Reference
  [0x1f, [UTF8, (1 << PUBACK) | (1 << PUBREC) | (1 << PUBREL) | (1 << PUBCOMP) | (1 << DISCONNECT)]], // Reason String
  [0x23, [INT2, 1 << PUBLISH]], // Topic Alias
  [0x26, [PAIR, 0xffff]], // User Property
])

/** [MQTT-3.4.2-1] / [MQTT-3.5.2-1] PUBACK and PUBREC reason codes; [MQTT-3.6.2-1] / [MQTT-3.7.2-1] PUBREL, PUBCOMP. */
const ACK_CODES = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
const REL_CODES = new Set([0x00, 0x92])
/** [MQTT-3.14.2-1] reason codes a client may send in DISCONNECT. */
const DISCONNECT_CODES = new Set([
  0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
])

const bad = (rc: number, why: string): Violation => ({ rc, why })

/**
 * Checks the packet in `buf[start, end)` (one whole frame, as framing found it) for a connection of protocol
 * level `version`. Returns undefined if it may be parsed.
 */
export function checkPacket(buf: Buffer, start: number, end: number, version: number): Violation | undefined {
  const type = buf[start] >> 4
  const flags = buf[start] & 0x0f
  let pos = start + 1
  while (buf[pos] & 0x80) pos++
  pos++
  const len = end - pos
  const v5 = version === 5
  switch (type) {
    case PUBLISH:
      return checkPublish(buf, pos, end, flags, v5)
    case PUBACK:
    case PUBREC:
    case PUBREL:
    case PUBCOMP:
      return checkAck(buf, pos, end, type, v5)
    case SUBSCRIBE:
      return checkSubscribe(buf, pos, end, v5)
    case UNSUBSCRIBE:
      return checkUnsubscribe(buf, pos, end, v5)
    case PINGREQ:
      // §3.12 (both versions): PINGREQ has no variable header and no payload.
      return len === 0 ? undefined : bad(MALFORMED, 'PINGREQ with a body')
    case DISCONNECT:
      if (!v5) return len === 0 ? undefined : bad(MALFORMED, 'DISCONNECT with a body')
      if (len === 0) return undefined
      if (!DISCONNECT_CODES.has(buf[pos])) return bad(PROTOCOL_ERROR, 'invalid DISCONNECT reason code')
      return len === 1 ? undefined : checkProperties(buf, pos + 1, end, DISCONNECT, true).v
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
): Violation | undefined {
  const qos = (flags >> 1) & 3
  // [MQTT-3.3.1-2] DUP must be 0 for QoS 0; [MQTT-3.3.1-4] QoS 3 is malformed (mqtt-packet checks it too).
  if (qos === 3) return bad(MALFORMED, 'PUBLISH with QoS 3')
  if (qos === 0 && flags & 8) return bad(MALFORMED, 'DUP set on a QoS 0 PUBLISH')
  const topicEnd = stringEnd(buf, pos, end)
  if (topicEnd < 0) return bad(MALFORMED, 'PUBLISH topic runs past the packet')
  const topic = checkTopicName(buf, pos + 2, topicEnd)
  if (topic) return topic
  pos = topicEnd
  if (qos > 0) {
    if (pos + 2 > end) return bad(MALFORMED, 'PUBLISH without its packet identifier')
    // [MQTT-2.2.1-3] (v3.1.1: MQTT-2.3.1-1) a QoS 1/2 PUBLISH carries a non-zero packet identifier.
    if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, 'packet identifier 0')
    pos += 2
  }
  if (!v5) return undefined
  const props = checkProperties(buf, pos, end, PUBLISH, false)
  return props.v
}

function checkAck(buf: Buffer, pos: number, end: number, type: number, v5: boolean): Violation | undefined {
  const len = end - pos
  const name = ['', '', '', '', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP'][type]
  // v3.1.1 §3.4.1-3.7.1: the Remaining Length is exactly 2; v5 §3.4.2.1: at least the packet identifier.
  if (len < 2 || (!v5 && len !== 2)) return bad(MALFORMED, `${name} of ${len} bytes`)
  // The identifier of a PUBLISH, which is never 0 [MQTT-2.2.1-3].
  if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, `${name} for packet identifier 0`)
  if (len === 2) return undefined
  const codes = type === PUBACK || type === PUBREC ? ACK_CODES : REL_CODES
  if (!codes.has(buf[pos + 2])) return bad(PROTOCOL_ERROR, `invalid ${name} reason code`)
  if (len === 3) return undefined
  return checkProperties(buf, pos + 3, end, type, true).v
}

function checkSubscribe(buf: Buffer, pos: number, end: number, v5: boolean): Violation | undefined {
  if (pos + 2 > end) return bad(MALFORMED, 'SUBSCRIBE without its packet identifier')
  // [MQTT-2.2.1-3] (v3.1.1: MQTT-2.3.1-1)
  if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, 'packet identifier 0')
  pos += 2
  if (v5) {
    const props = checkProperties(buf, pos, end, SUBSCRIBE, false)
    if (props.v) return props.v
    pos = props.end
  }
  // [MQTT-3.8.3-2] (v3.1.1: MQTT-3.8.3-3) at least one topic filter.
  if (pos === end) return bad(PROTOCOL_ERROR, 'SUBSCRIBE without a topic filter')
  while (pos < end) {
    const fEnd = stringEnd(buf, pos, end)
    if (fEnd < 0 || fEnd >= end)
      return bad(MALFORMED, 'SUBSCRIBE topic filter or options run past the packet')
    const filter = checkFilter(buf, pos + 2, fEnd)
    if (filter) return filter
    const o = buf[fEnd]
    // [MQTT-3.8.3-5] (v3.1.1: MQTT-3-8.3-4, which also makes QoS 3 malformed) reserved option bits are 0;
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

function checkUnsubscribe(buf: Buffer, pos: number, end: number, v5: boolean): Violation | undefined {
  if (pos + 2 > end) return bad(MALFORMED, 'UNSUBSCRIBE without its packet identifier')
  // [MQTT-2.2.1-3] (v3.1.1: MQTT-2.3.1-1)
  if (buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, 'packet identifier 0')
  pos += 2
  if (v5) {
    const props = checkProperties(buf, pos, end, UNSUBSCRIBE, false)
    if (props.v) return props.v
    pos = props.end
  }
  // [MQTT-3.10.3-2] at least one topic filter.
  if (pos === end) return bad(PROTOCOL_ERROR, 'UNSUBSCRIBE without a topic filter')
  while (pos < end) {
    const fEnd = stringEnd(buf, pos, end)
    if (fEnd < 0) return bad(MALFORMED, 'UNSUBSCRIBE topic filter runs past the packet')
    const filter = checkFilter(buf, pos + 2, fEnd)
    if (filter) return filter
    pos = fEnd
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

/** [MQTT-4.7.3-1] at least one character; [MQTT-1.5.4-1/-2] well-formed UTF-8 without U+0000. */
function checkFilter(buf: Buffer, from: number, to: number): Violation | undefined {
  if (to === from) return bad(PROTOCOL_ERROR, 'empty topic filter')
  return validUtf8(buf, from, to) ? undefined : bad(MALFORMED, 'topic filter is not valid UTF-8')
}

/** [MQTT-3.3.2-1/-2] a PUBLISH topic is UTF-8 without wildcards; empty only with a Topic Alias (we allow none). */
function checkTopicName(buf: Buffer, from: number, to: number): Violation | undefined {
  if (to === from) return bad(PROTOCOL_ERROR, 'empty topic name')
  if (!validUtf8(buf, from, to)) return bad(MALFORMED, 'topic name is not valid UTF-8')
  for (let i = from; i < to; i++) {
    if (buf[i] === 0x23 || buf[i] === 0x2b) return bad(PROTOCOL_ERROR, 'wildcard in a topic name')
  }
  return undefined
}

/** End of the length-prefixed string at `pos`, or -1 if it runs past `end`. */
function stringEnd(buf: Buffer, pos: number, end: number): number {
  if (pos + 2 > end) return -1
  const e = pos + 2 + buf.readUInt16BE(pos)
  return e > end ? -1 : e
}

/** A Variable Byte Integer at `pos`: [value, end], or undefined if malformed or past `end` (§1.5.5). */
function readVbi(buf: Buffer, pos: number, end: number): [number, number] | undefined {
  let value = 0
  let mult = 1
  for (let k = 0; k < 4; k++) {
    if (pos >= end) return undefined
    const b = buf[pos++]
    value += (b & 0x7f) * mult
    if ((b & 0x80) === 0) return [value, pos]
    mult *= 128
  }
  return undefined
}

/**
 * The property block at `pos` for a packet of `type` (MQTT 5 §2.2.2): its length must match, each identifier
 * must belong to the packet type, and all but User Property appear at most once. With `last`, the block must
 * end the packet.
 */
function checkProperties(
  buf: Buffer,
  pos: number,
  end: number,
  type: number,
  last: boolean,
): { v?: Violation; end: number } {
  const lenVbi = readVbi(buf, pos, end)
  if (!lenVbi) return { v: bad(MALFORMED, 'malformed property length'), end }
  const [len, start] = lenVbi
  const stop = start + len
  if (stop > end || (last && stop !== end))
    return { v: bad(MALFORMED, 'property length does not match the packet'), end }
  const seen: number[] = []
  pos = start
  while (pos < stop) {
    const idVbi = readVbi(buf, pos, stop)
    if (!idVbi) return { v: bad(MALFORMED, 'malformed property identifier'), end }
    const [id, at] = idVbi
    const spec = PROPS.get(id)
    // §2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
    if (!spec || (spec[1] & (1 << type)) === 0) {
      return { v: bad(MALFORMED, `property 0x${id.toString(16)} is not allowed here`), end }
    }
    if (id !== 0x26) {
      // Each property other than User Property may appear at most once (a Protocol Error otherwise).
      if (seen.includes(id)) return { v: bad(PROTOCOL_ERROR, `property 0x${id.toString(16)} repeated`), end }
      seen.push(id)
    }
    const next = propertyEnd(buf, at, stop, spec[0], id)
    if (typeof next !== 'number') return { v: next, end }
    pos = next
  }
  return { end: stop }
}

/** End of one property value, or the violation in it. */
function propertyEnd(buf: Buffer, pos: number, stop: number, kind: number, id: number): number | Violation {
  const short = bad(MALFORMED, `property 0x${id.toString(16)} runs past its block`)
  switch (kind) {
    case BYTE:
      if (pos + 1 > stop) return short
      // §3.3.2.3.2: a Payload Format Indicator is 0 or 1.
      if (id === 0x01 && buf[pos] > 1) return bad(PROTOCOL_ERROR, 'Payload Format Indicator above 1')
      return pos + 1
    case INT2:
      if (pos + 2 > stop) return short
      // [MQTT-3.3.2-8] a Topic Alias of 0 is a Protocol Error.
      if (id === 0x23 && buf.readUInt16BE(pos) === 0) return bad(PROTOCOL_ERROR, 'Topic Alias 0')
      return pos + 2
    case INT4:
      return pos + 4 > stop ? short : pos + 4
    case VBI: {
      const r = readVbi(buf, pos, stop)
      if (!r) return short
      // §3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
      if (r[0] === 0) return bad(PROTOCOL_ERROR, 'Subscription Identifier 0')
      return r[1]
    }
    case BINARY: {
      const e = stringEnd(buf, pos, stop)
      return e < 0 ? short : e
    }
    case UTF8:
    case PAIR: {
      let e = stringEnd(buf, pos, stop)
      if (e < 0 || !validUtf8(buf, pos + 2, e))
        return e < 0 ? short : bad(MALFORMED, 'property is not valid UTF-8')
      // [MQTT-3.3.2-14] a Response Topic has no wildcards.
      if (id === 0x08 && (buf.subarray(pos + 2, e).includes(0x23) || buf.subarray(pos + 2, e).includes(0x2b)))
        return bad(PROTOCOL_ERROR, 'wildcard in the Response Topic')
      if (kind === PAIR) {
        const s = e
        e = stringEnd(buf, s, stop)
        if (e < 0 || !validUtf8(buf, s + 2, e))
          return e < 0 ? short : bad(MALFORMED, 'property is not valid UTF-8')
      }
      return e
    }
    default:
      return short
  }
}

/**
 * [MQTT-1.5.4-1] well-formed UTF-8 (no surrogates, overlongs or code points past U+10FFFF); [MQTT-1.5.4-2]
 * no U+0000. Control characters (U+0001-U+001F, U+007F-U+009F) and non-characters, which a receiver may
 * treat as malformed [MQTT-1.5.4], are refused too, as Mosquitto does: none belongs in a topic or a name.
 */
export function validUtf8(buf: Buffer, from: number, to: number): boolean {
  let i = from
  while (i < to) {
    const b = buf[i]
    if (b < 0x80) {
      if (b < 0x20 || b === 0x7f) return false
      i++
      continue
    }
    let n: number
    let cp: number
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1
      cp = b & 0x1f
    } else if ((b & 0xf0) === 0xe0) {
      n = 2
      cp = b & 0x0f
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3
      cp = b & 0x07
    } else {
      return false
    }
    if (i + n >= to) return false
    for (let k = 1; k <= n; k++) {
      const c = buf[i + k]
      if ((c & 0xc0) !== 0x80) return false
      cp = (cp << 6) | (c & 0x3f)
    }
    if (n === 2 && cp < 0x800) return false
    if (n === 3 && (cp < 0x10000 || cp > 0x10ffff)) return false
    if (cp >= 0xd800 && cp <= 0xdfff) return false
    if (cp <= 0x9f) return false
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false
    i += n + 1
  }
  return true
}
