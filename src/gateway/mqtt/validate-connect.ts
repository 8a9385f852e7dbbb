/**
 * The CONNECT packet checked on its bytes, like every other packet (validate.ts), before mqtt-packet parses
 * it: mqtt-packet ignores trailing bytes and decodes ill-formed UTF-8 in the client id, username and will
 * topic into U+FFFD, which would authenticate or key a session with a name the client never sent.
 *
 * Spec references are to MQTT 5.0 unless marked v3.1.1; the v3.1.1 rules are the same where both exist.
 */
import { PacketType, ReasonCode } from './codes.js'
import { decodeVbi } from './framing.js'
import { WILL_PROPERTIES, checkProperties, propertiesEnd } from './properties.js'
import { Utf8, stringEnd, utf8Fault } from './utf8.js'

/** Why a CONNECT is refused, and how to answer it. */
export interface ConnectFault {
  /** The protocol level to answer in: 5 gets a v5 CONNACK, anything else the v3.1.1 one. */
  version: number
  /**
   * The v5 CONNACK reason code (§3.2.2.2): a v5 client is told it before the close [MQTT-3.1.4-1]. v3.1.1 has
   * a return code only for the client id, the username and the protocol level (codes.ts); it closes without a
   * CONNACK on a CONNECT that does not conform to its section 3.1 (v3.1.1: MQTT-3.1.4-1) and on ill-formed
   * UTF-8 (v3.1.1: MQTT-1.5.3-1/-2).
   */
  rc: number
  why: string
}

const CLEAN = 0x02
const WILL = 0x04
const WILL_RETAIN = 0x20
const PASSWORD = 0x40
const USERNAME = 0x80

/** Checks the CONNECT in `buf[start, end)` (one whole frame). Returns undefined if it may be parsed. */
export function checkConnect(buf: Buffer, start: number, end: number): ConnectFault | undefined {
  let pos = decodeVbi(buf, start + 1, end)
  // [MQTT-3.1.2-1] the protocol name is "MQTT" ("MQIsdp" for MQTT 3.1, protocol level 3); any other: close.
  const nameEnd = stringEnd(buf, pos, end)
  const name = nameEnd < 0 ? '' : buf.toString('latin1', pos + 2, nameEnd)
  if (name !== 'MQTT' && name !== 'MQIsdp') return fault(0, ReasonCode.malformedPacket, 'not MQTT')
  if (nameEnd >= end) return fault(4, ReasonCode.malformedPacket, 'CONNECT without a protocol level')
  const level = buf[nameEnd]
  // [MQTT-3.1.2-2] an unsupported protocol level: CONNACK 0x01 in v3.1.1's format, which any client reads.
  if (name === 'MQTT' ? level !== 4 && level !== 5 : level !== 3)
    return fault(4, ReasonCode.unsupportedProtocolVersion, `protocol level ${level}`)
  const v = level
  const malformed = (why: string) => fault(v, ReasonCode.malformedPacket, why)
  // [MQTT-2.1.3-1] (v3.1.1: MQTT-2.2.2-1/-2) the fixed header's reserved flags are 0.
  if (buf[start] !== PacketType.connect << 4) return malformed('reserved CONNECT header flags set')
  pos = nameEnd + 1
  if (pos + 3 > end) return malformed('CONNECT variable header runs past the packet')
  const flags = buf[pos]
  const willQos = (flags >> 3) & 3
  // [MQTT-3.1.2-3] the reserved flag is 0.
  if (flags & 0x01) return malformed('reserved connect flag set')
  if (flags & WILL) {
    // [MQTT-3.1.2-12] (v3.1.1: MQTT-3.1.2-14) a will QoS is 0, 1 or 2.
    if (willQos === 3) return malformed('will QoS 3')
  } else if (willQos !== 0 || flags & WILL_RETAIN) {
    // [MQTT-3.1.2-11/-13] (v3.1.1: MQTT-3.1.2-13/-15) no will: will QoS and will retain are 0.
    return malformed('will QoS or will retain without a will')
  }
  // v3.1.1: MQTT-3.1.2-22, a password needs a username (v5 allows one alone).
  if (v !== 5 && flags & PASSWORD && !(flags & USERNAME)) return malformed('password without a username')
  pos += 3
  let at: number | ConnectFault = v === 5 ? properties(buf, pos, end, v, PacketType.connect) : pos
  if (typeof at !== 'number') return at

  // [MQTT-3.1.3-1] the payload: client id, then (will properties, will topic, will payload), username, password.
  // [MQTT-3.1.3-4] the client id is UTF-8; one the server rejects gets 0x85 [MQTT-3.1.3-8] (v3.1.1: CONNACK
  // 0x02, MQTT-3.1.3-9).
  const idStart = at
  at = stringField(buf, at, end, v, 'client id', ReasonCode.clientIdentifierNotValid)
  if (typeof at !== 'number') return at
  if (at === idStart + 2 && v !== 5 && (v === 3 || !(flags & CLEAN))) {
    // v3.1.1: MQTT-3.1.3-8, an empty client id needs a clean session; MQTT 3.1 takes none at all.
    const why = v === 3 ? 'MQTT 3.1 needs a client id' : 'an empty client id needs a clean session'
    return fault(v, ReasonCode.clientIdentifierNotValid, why)
  }
  if (flags & WILL) {
    // [MQTT-3.1.2-9] the will topic and payload are present; [MQTT-3.1.3-11] (v3.1.1: MQTT-3.1.3-10) the topic
    // is UTF-8. v5 can say a topic is not accepted: 0x90.
    if (v === 5) at = properties(buf, at, end, v, WILL_PROPERTIES)
    if (typeof at === 'number') at = stringField(buf, at, end, v, 'will topic', ReasonCode.topicNameInvalid)
    if (typeof at === 'number') at = binaryField(buf, at, end, v, 'will payload')
    if (typeof at !== 'number') return at
  }
  if (flags & USERNAME) {
    // [MQTT-3.1.2-17] (v3.1.1: MQTT-3.1.2-19) present; [MQTT-3.1.3-12] (v3.1.1: MQTT-3.1.3-11) UTF-8.
    at = stringField(buf, at, end, v, 'username', ReasonCode.badUsernameOrPassword)
    if (typeof at !== 'number') return at
  }
  if (flags & PASSWORD) {
    // [MQTT-3.1.2-19] (v3.1.1: MQTT-3.1.2-21) present.
    at = binaryField(buf, at, end, v, 'password')
    if (typeof at !== 'number') return at
  }
  // [MQTT-3.1.2-16/-18] (v3.1.1: MQTT-3.1.2-18/-20) no field its flag does not announce: nothing may follow.
  if (at !== end) return malformed('bytes after the last CONNECT field')
  return undefined
}

/**
 * The UTF-8 string field at `pos`: its end, or the fault. Missing or ill-formed, it is malformed; with
 * discouraged characters, it is answered with `discouraged`, what v5 says of that field.
 */
function stringField(
  buf: Buffer,
  pos: number,
  end: number,
  v: number,
  name: string,
  discouraged: number,
): number | ConnectFault {
  const e = stringEnd(buf, pos, end)
  if (e < 0) return fault(v, ReasonCode.malformedPacket, `CONNECT without its ${name}`)
  switch (utf8Fault(buf, pos + 2, e)) {
    case Utf8.illFormed:
      return fault(v, ReasonCode.malformedPacket, `${name} is not valid UTF-8`)
    case Utf8.discouraged:
      return fault(v, discouraged, `control characters in the ${name}`)
  }
  return e
}

function binaryField(buf: Buffer, pos: number, end: number, v: number, name: string): number | ConnectFault {
  const e = stringEnd(buf, pos, end)
  return e < 0 ? fault(v, ReasonCode.malformedPacket, `CONNECT without its ${name}`) : e
}

/** The v5 property block at `pos` of the CONNECT or of its will: its end, or the fault. */
function properties(buf: Buffer, pos: number, end: number, v: number, type: number): number | ConnectFault {
  const bad = checkProperties(buf, pos, end, type, false)
  if (bad) return fault(v, bad.rc, type === WILL_PROPERTIES ? `will: ${bad.why}` : bad.why)
  return propertiesEnd.at
}

function fault(version: number, rc: number, why: string): ConnectFault {
  return { version, rc, why }
}
