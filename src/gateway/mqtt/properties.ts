/**
 * MQTT 5 property blocks (§2.2.2), checked on their bytes: the block length must match, each identifier must
 * belong to the packet type, all but User Property appear at most once, and each value is well-formed.
 */
import { PacketType, ReasonCode } from './codes.js'
import { decodeVbi, vbi } from './framing.js'
import { stringEnd, validUtf8 } from './utf8.js'

export interface Violation {
  /** The v5 reason code the violation is answered with. */
  rc: number
  why: string
}

export const bad = (rc: number, why: string): Violation => ({ rc, why })

/**
 * The will's property block in a CONNECT (§3.1.3.2), which has no packet type of its own: it takes bit 0 of
 * the masks below, as packet type 0 is reserved.
 */
export const WILL_PROPERTIES = 0

const BYTE = 1
const INT2 = 2
const INT4 = 4
const VBI = 5
const UTF8 = 6
const BINARY = 7
const PAIR = 8

const bit = (...types: number[]) => types.reduce((m, t) => m | (1 << t), 0)
const { connect, publish, puback, pubrec, pubrel, pubcomp, subscribe, disconnect } = PacketType

/**
 * Properties a client may send: identifier -> [data type, packet types allowed in (bit mask)] (§2.2.2.2,
 * table 2-4). Subscription Identifier is tolerated in PUBLISH as brokers do; it is ignored.
 */
const PROPS = new Map<number, [number, number]>([
  [0x01, [BYTE, bit(publish, WILL_PROPERTIES)]], // Payload Format Indicator
  [0x02, [INT4, bit(publish, WILL_PROPERTIES)]], // Message Expiry Interval
  [0x03, [UTF8, bit(publish, WILL_PROPERTIES)]], // Content Type
  [0x08, [UTF8, bit(publish, WILL_PROPERTIES)]], // Response Topic
  [0x09, [BINARY, bit(publish, WILL_PROPERTIES)]], // Correlation Data
  [0x0b, [VBI, bit(publish, subscribe)]], // Subscription Identifier
  [0x11, [INT4, bit(connect, disconnect)]], // Session Expiry Interval
  [0x15, [UTF8, bit(connect)]], // Authentication Method
  [0x16, [BINARY, bit(connect)]], // Authentication Data
  [0x17, [BYTE, bit(connect)]], // Request Problem Information
  [0x18, [INT4, bit(WILL_PROPERTIES)]], // Will Delay Interval
  [0x19, [BYTE, bit(connect)]], // Request Response Information
  [0x1c, [UTF8, bit(disconnect)]], // Server Reference
  [0x1f, [UTF8, bit(puback, pubrec, pubrel, pubcomp, disconnect)]], // Reason String
  [0x21, [INT2, bit(connect)]], // Receive Maximum
  [0x22, [INT2, bit(connect)]], // Topic Alias Maximum
  [0x23, [INT2, bit(publish)]], // Topic Alias
  [0x26, [PAIR, 0xffff]], // User Property
  [0x27, [INT4, bit(connect)]], // Maximum Packet Size
])

/**
 * Properties whose value 0 is a Protocol Error: Topic Alias [MQTT-3.3.2-8], Receive Maximum and Maximum Packet
 * Size (§3.1.2.11.3-4).
 */
const NOT_ZERO = new Set([0x21, 0x23, 0x27])

/** Where `checkProperties` leaves the end of the block it accepted. */
export const propertiesEnd = { at: 0 }

/**
 * Checks the property block at `pos` for a packet of `type` (or WILL_PROPERTIES). With `last`, the block must
 * end the packet. Returns the violation, or undefined with the block's end in `propertiesEnd.at`.
 */
export function checkProperties(
  buf: Buffer,
  pos: number,
  end: number,
  type: number,
  last: boolean,
): Violation | undefined {
  const start = decodeVbi(buf, pos, end)
  if (start < 0) return bad(ReasonCode.malformedPacket, 'malformed property length')
  const stop = start + vbi.value
  if (stop > end || (last && stop !== end))
    return bad(ReasonCode.malformedPacket, 'property length does not match the packet')
  let seen: number[] | undefined
  pos = start
  while (pos < stop) {
    const at = decodeVbi(buf, pos, stop)
    if (at < 0) return bad(ReasonCode.malformedPacket, 'malformed property identifier')
    const id = vbi.value
    const spec = PROPS.get(id)
    // §2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
    if (!spec || (spec[1] & (1 << type)) === 0)
      return bad(ReasonCode.malformedPacket, `${propName(id)} is not allowed here`)
    if (id !== 0x26) {
      // Each property other than User Property may appear at most once (a Protocol Error otherwise).
      if (seen?.includes(id)) return bad(ReasonCode.protocolError, `${propName(id)} repeated`)
      ;(seen ??= []).push(id)
    }
    const next = propertyEnd(buf, at, stop, spec[0], id)
    if (typeof next !== 'number') return next
    pos = next
  }
  propertiesEnd.at = stop
  return undefined
}

const propName = (id: number) => `property 0x${id.toString(16)}`
const short = (id: number) => bad(ReasonCode.malformedPacket, `${propName(id)} runs past its block`)

/** End of one property value, or the violation in it. */
function propertyEnd(buf: Buffer, pos: number, stop: number, kind: number, id: number): number | Violation {
  switch (kind) {
    case BYTE:
      if (pos + 1 > stop) return short(id)
      // §3.3.2.3.2: a Payload Format Indicator is 0 or 1; so are Request Problem and Request Response
      // Information (§3.1.2.11.7-8).
      if (buf[pos] > 1) return bad(ReasonCode.protocolError, `${propName(id)} above 1`)
      return pos + 1
    case INT2:
    case INT4: {
      if (pos + kind > stop) return short(id)
      const value = kind === INT2 ? buf.readUInt16BE(pos) : buf.readUInt32BE(pos)
      if (value === 0 && NOT_ZERO.has(id)) return bad(ReasonCode.protocolError, `${propName(id)} is 0`)
      return pos + kind
    }
    case VBI: {
      const e = decodeVbi(buf, pos, stop)
      if (e < 0) return short(id)
      // §3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
      if (vbi.value === 0) return bad(ReasonCode.protocolError, 'Subscription Identifier 0')
      return e
    }
    case BINARY: {
      const e = stringEnd(buf, pos, stop)
      return e < 0 ? short(id) : e
    }
    default: {
      // UTF8 and PAIR: one UTF-8 string, or two [MQTT-1.5.7-1].
      let e = stringEnd(buf, pos, stop)
      if (e < 0) return short(id)
      if (!validUtf8(buf, pos + 2, e))
        return bad(ReasonCode.malformedPacket, `${propName(id)} is not valid UTF-8`)
      // [MQTT-3.3.2-14] a Response Topic has no wildcards.
      if (id === 0x08 && (buf.subarray(pos + 2, e).includes(0x23) || buf.subarray(pos + 2, e).includes(0x2b)))
        return bad(ReasonCode.protocolError, 'wildcard in the Response Topic')
      if (kind === PAIR) {
        const s = e
        e = stringEnd(buf, s, stop)
        if (e < 0) return short(id)
        if (!validUtf8(buf, s + 2, e))
          return bad(ReasonCode.malformedPacket, `${propName(id)} is not valid UTF-8`)
      }
      return e
    }
  }
}
