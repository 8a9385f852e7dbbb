/**
 * Teltonika's binary protocols as pure functions over bytes: the IMEI handshake, TCP framing and CRC-16/IBM,
 * the AVL data of Codec 8, 8 Extended and 16, Codec 12 commands and responses, Codec 13 messages, and the UDP
 * channel with its acknowledgement. Nothing here throws on any input: every read is bounds-checked first and
 * a fault is returned as a value (the fuzz test holds it to that).
 *
 * References are to Teltonika's public "Teltonika Data Sending Protocols" page
 * (https://wiki.teltonika-gps.com/view/Teltonika_Data_Sending_Protocols, formerly "Codec"), by its section
 * headings, written [TDSP <codec> / <section>]. Where the page contradicts itself the choice is said.
 */

/** [TDSP Introduction] the codec ids. */
export const CODEC = {
  c8: 0x08,
  c8e: 0x8e,
  c16: 0x10,
  c12: 0x0c,
  c13: 0x0d,
} as const

/**
 * Largest Data Field Length taken, in bytes. [TDSP Codec 8 / AVL Data Packet, the note] gives 1,280 bytes as the
 * largest AVL packet of every device family but the FMB6 one (512). 16 KiB leaves room for firmware that sends
 * more (8 Extended's variable-length elements, a long Codec 12 reply) and still bounds what one connection can
 * make the gateway buffer for a packet it has not finished sending.
 */
export const MAX_DATA_LENGTH = 16 * 1024

/**
 * Longest IMEI taken in the handshake. An IMEI is 15 digits ([TDSP Codec 8 / Communication with server]: the
 * device sends its IMEI as text); 32 leaves room for IMEISV and other identifiers configured as the "IMEI"
 * while a garbage length is refused at once instead of being waited for.
 */
export const MAX_IMEI_LENGTH = 32

/**
 * [TDSP Codec 8 / Communication with server] the server's one-byte answer to the IMEI: 0x01 accepts the
 * device, 0x00 refuses it.
 */
export const IMEI_ACCEPTED = Buffer.from([0x01])
export const IMEI_REFUSED = Buffer.from([0x00])

/**
 * The byte a device sends on an idle TCP connection when its "Network Ping Timeout" passes (Teltonika's FMB
 * configuration: "the FMB device will automatically send 0xFF byte to the server"). It cannot start a packet
 * (whose preamble is zeros), so it is skipped wherever a packet may begin.
 */
export const PING = 0xff

// ---------------------------------------------------------------- CRC-16/IBM

const CRC_TABLE = (() => {
  // [TDSP CRC-16] CRC-16/IBM (ARC): polynomial 0x8005 reflected (0xA001), initial value 0, no final xor.
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1
    t[i] = c
  }
  return t
})()

/** CRC-16/IBM of `buf[start, end)`. */
export function crc16(buf: Uint8Array, start = 0, end = buf.length): number {
  let crc = 0
  for (let i = start; i < end; i++) crc = (crc >>> 8) ^ CRC_TABLE[(crc ^ buf[i]) & 0xff]
  return crc
}

// ---------------------------------------------------------------- the IMEI handshake

/** The handshake's state after scanning what arrived so far. */
export type Handshake =
  | { kind: 'need' }
  | { kind: 'imei'; imei: string; end: number }
  | { kind: 'bad'; why: string }

/**
 * [TDSP Codec 8 / Communication with server] "first the module sends its IMEI": two bytes of length, then the
 * IMEI as text. Refused: a length of 0 or over MAX_IMEI_LENGTH, and anything but printable ASCII.
 */
export function scanHandshake(buf: Uint8Array, pos: number): Handshake {
  if (buf.length - pos < 2) return { kind: 'need' }
  const len = (buf[pos] << 8) | buf[pos + 1]
  if (len === 0 || len > MAX_IMEI_LENGTH)
    return { kind: 'bad', why: `an IMEI length of ${len}; expected 1 to ${MAX_IMEI_LENGTH}` }
  const end = pos + 2 + len
  if (buf.length < end) return { kind: 'need' }
  let imei = ''
  for (let i = pos + 2; i < end; i++) {
    const c = buf[i]
    if (c < 0x21 || c > 0x7e) return { kind: 'bad', why: 'an IMEI that is not printable ASCII' }
    imei += String.fromCharCode(c)
  }
  return { kind: 'imei', imei, end }
}

// ---------------------------------------------------------------- TCP framing

export const Frame = {
  /** More bytes are needed; `need` is the whole frame's length once known, else 0. */
  need: 0,
  /** A whole packet in [pos, end): preamble, Data Field Length, data, CRC. */
  packet: 1,
  /** The one-byte ping, at pos. */
  ping: 2,
  /** Not a Teltonika frame: a preamble that is not zeros, or a Data Field Length too small to hold a codec. */
  garbage: 3,
  /** A Data Field Length over MAX_DATA_LENGTH. */
  tooLong: 4,
} as const
export type FrameKind = (typeof Frame)[keyof typeof Frame]

/** What scanTcp found; reused by the caller (one object per gateway, not per read). */
export interface TcpScan {
  kind: FrameKind
  /** Packet: its end. Need: the frame's total length once the header is in, else 0. */
  end: number
  /** The Data Field Length read (packet, tooLong). */
  length: number
}

/** Preamble (4) + Data Field Length (4) before the data; CRC (4) after it. */
export const HEADER = 8
export const TRAILER = 4
/**
 * The smallest Data Field Length any codec can have: Codec ID, Number of Data 1 and Number of Data 2
 * ([TDSP Codec 8 / AVL Data Packet]). Anything shorter cannot be a packet.
 */
const MIN_DATA_LENGTH = 3

/**
 * Frames one TCP packet at `pos` ([TDSP Codec 8 / AVL Data Packet]: four zero bytes of preamble, the Data
 * Field Length counted from Codec ID to Number of Data 2, the data, 4 bytes of CRC). The same framing carries
 * Codec 12 and 13 ([TDSP Codec 12 / Structure]). A preamble byte that is not zero is garbage as soon as it
 * arrives, without waiting for the rest of the header.
 */
export function scanTcp(buf: Uint8Array, pos: number, out: TcpScan): TcpScan {
  out.end = 0
  out.length = 0
  const avail = buf.length - pos
  if (avail <= 0) {
    out.kind = Frame.need
    return out
  }
  if (buf[pos] === PING) {
    out.kind = Frame.ping
    out.end = pos + 1
    return out
  }
  for (let i = 0; i < 4 && i < avail; i++) {
    if (buf[pos + i] !== 0) {
      out.kind = Frame.garbage
      return out
    }
  }
  if (avail < HEADER) {
    out.kind = Frame.need
    return out
  }
  // Read as unsigned: a length with the top bit set is over the limit, not negative.
  const length = buf[pos + 4] * 0x1000000 + ((buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7])
  out.length = length
  if (length > MAX_DATA_LENGTH) {
    out.kind = Frame.tooLong
    return out
  }
  if (length < MIN_DATA_LENGTH) {
    out.kind = Frame.garbage
    return out
  }
  const total = HEADER + length + TRAILER
  out.end = pos + total
  out.kind = avail < total ? Frame.need : Frame.packet
  return out
}

/**
 * Whether the CRC of the packet in [pos, end) is right ([TDSP Codec 8 / AVL Data Packet]: "CRC-16 – calculated
 * from Codec ID to the Second Number of Data"; 4 bytes, of which the first two are zero). The whole 4-byte
 * field is compared, so non-zero upper bytes are a mismatch too.
 */
export function crcMatches(buf: Uint8Array, pos: number, end: number): boolean {
  const at = end - TRAILER
  const sent = buf[at] * 0x1000000 + ((buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3])
  return sent === crc16(buf, pos + HEADER, at)
}

/** [TDSP Codec 8 / Communication with server] the TCP ack: the number of records accepted, 4 bytes. */
export function tcpAck(records: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(records >>> 0, 0)
  return b
}

// ---------------------------------------------------------------- AVL data (Codec 8, 8 Extended, 16)

/** One IO element as sent: its id, and its value's bytes in the packet. */
export interface IoElement {
  id: number
  /** Where the value's bytes are in the buffer decoded. */
  at: number
  /** 1, 2, 4 or 8; for 8 Extended's variable-length elements, their length (0 to 65535). */
  size: number
  /** True for 8 Extended's variable-length (NX) elements, whatever their length. */
  variable: boolean
}

export interface AvlRecord {
  /** [TDSP Codec 8 / AVL Data] ms since the epoch, UTC. */
  ts: number
  /** 0 low, 1 high, 2 panic. */
  priority: number
  /** Degrees, from the integer / 10^7 ([TDSP Codec 8 / GPS element]; two's complement, negative: W and S). */
  lon: number
  lat: number
  /** m above sea level (signed: below sea level is possible). */
  alt: number
  /** Degrees from north, clockwise. */
  angle: number
  satellites: number
  /** km/h. */
  speed: number
  /** The IO id whose change made the record, 0 when none. */
  eventIo: number
  /** Codec 16 only: the record's generation type ([TDSP Codec 16 / AVL Data]). */
  generation?: number
  io: IoElement[]
  /** The record's bytes, [start, end) of the buffer decoded: what makes it itself (its msgId, readings.ts). */
  start: number
  end: number
}

export type AvlResult = { ok: true; codec: number; records: AvlRecord[] } | { ok: false; why: string }

/** Timestamp 8 + Priority 1 + GPS element 15. */
const RECORD_HEAD = 24
/** The fixed sizes of IO values, in the order their groups come (N1, N2, N4, N8). */
const FIXED_SIZES = [1, 2, 4, 8] as const

/** The layout of the IO element of each codec: sizes of its fields in bytes. */
interface IoLayout {
  /** Event IO ID. */
  event: 1 | 2
  /** Codec 16's Generation Type byte after the event id. */
  generation: boolean
  /** N (total) and every N1, N2, N4, N8 (and 8 Extended's NX) count. */
  count: 1 | 2
  /** Each element's id. */
  id: 1 | 2
  /** 8 Extended's variable-length elements after the 8-byte ones. */
  nx: boolean
}

const LAYOUT: Record<number, IoLayout> = {
  // [TDSP Codec 8 / IO Element] every id and count is one byte.
  [CODEC.c8]: { event: 1, generation: false, count: 1, id: 1, nx: false },
  // [TDSP Codec 8 Extended / IO Element] ids and counts of two bytes, then NX variable-length elements.
  [CODEC.c8e]: { event: 2, generation: false, count: 2, id: 2, nx: true },
  // [TDSP Codec 16 / IO Element] two-byte event id and element ids, a Generation Type byte, one-byte counts.
  [CODEC.c16]: { event: 2, generation: true, count: 1, id: 2, nx: false },
}

/** Whether `codec` carries AVL data ([TDSP Introduction]). */
export const isAvlCodec = (codec: number): boolean => LAYOUT[codec] !== undefined

const u16 = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1]
const u32 = (b: Uint8Array, i: number) => b[i] * 0x1000000 + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3])
const i32 = (b: Uint8Array, i: number) => (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]

/**
 * The AVL data array in `buf[start, end)`: Codec ID, Number of Data 1, the records, Number of Data 2
 * ([TDSP Codec 8 / AVL Data Packet]; the same array in a UDP datagram, [TDSP Codec 8 / UDP channel]). Faults:
 * an unknown codec, no records, a record running past the array, bytes left over, and Number of Data 1 and 2
 * that disagree ("This number must be the same as Number of Data 1").
 */
export function decodeAvl(buf: Uint8Array, start: number, end: number): AvlResult {
  if (end - start < MIN_DATA_LENGTH) return { ok: false, why: 'the AVL data array is too short' }
  const codec = buf[start]
  const layout = LAYOUT[codec]
  if (!layout) return { ok: false, why: `codec 0x${hex2(codec)} does not carry AVL data` }
  const n1 = buf[start + 1]
  // The minimum AVL packet holds one record ([TDSP Codec 8 / AVL Data Packet, the note]).
  if (n1 === 0) return { ok: false, why: 'a packet of 0 records' }
  const records: AvlRecord[] = []
  // Number of Data 2 is the array's last byte: records end before it.
  const last = end - 1
  let p = start + 2
  for (let r = 0; r < n1; r++) {
    const rec = decodeRecord(buf, p, last, layout)
    if (typeof rec === 'string') return { ok: false, why: `record ${r + 1} of ${n1}: ${rec}` }
    if (codec !== CODEC.c16) rec.generation = undefined
    records.push(rec)
    p = rec.end
  }
  if (p !== last) return { ok: false, why: `${last - p} bytes between the last record and Number of Data 2` }
  const n2 = buf[last]
  if (n2 !== n1) return { ok: false, why: `Number of Data 1 is ${n1} but Number of Data 2 is ${n2}` }
  return { ok: true, codec, records }
}

/** One record at `p`, which must end by `limit`; a string says what is wrong. */
function decodeRecord(buf: Uint8Array, p: number, limit: number, layout: IoLayout): AvlRecord | string {
  const start = p
  if (p + RECORD_HEAD > limit) return 'it runs past the end of the packet'
  // [TDSP Codec 8 / AVL Data] Timestamp, 8 bytes of ms since the epoch: exact in a double up to 2^53 ms
  // (year 287396); a larger one is refused by the reading's own ts rule (readings/time.ts) as out of range.
  const ts = u32(buf, p) * 0x100000000 + u32(buf, p + 4)
  const priority = buf[p + 8]
  // [TDSP Codec 8 / GPS element] Longitude, Latitude (4 bytes each, signed), Altitude (2, signed here: a
  // place below sea level), Angle (2), Satellites (1), Speed (2).
  const lon = i32(buf, p + 9) / 1e7
  const lat = i32(buf, p + 13) / 1e7
  const altRaw = u16(buf, p + 17)
  const alt = altRaw > 0x7fff ? altRaw - 0x10000 : altRaw
  const angle = u16(buf, p + 19)
  const satellites = buf[p + 21]
  const speed = u16(buf, p + 22)
  p += RECORD_HEAD
  const headLen = layout.event + (layout.generation ? 1 : 0) + layout.count
  if (p + headLen > limit) return 'its IO element runs past the end of the packet'
  const eventIo = layout.event === 2 ? u16(buf, p) : buf[p]
  p += layout.event
  let generation: number | undefined
  if (layout.generation) generation = buf[p++]
  // N, the total of the counts that follow, is not held against them: nothing depends on it, and a record
  // whose counts and values are consistent is read the same either way.
  p += layout.count
  const io: IoElement[] = []
  for (const size of FIXED_SIZES) {
    if (p + layout.count > limit) return `its ${size}-byte IO count runs past the end of the packet`
    const n = layout.count === 2 ? u16(buf, p) : buf[p]
    p += layout.count
    const step = layout.id + size
    if (p + n * step > limit) return `its ${n} IO elements of ${size} bytes run past the end of the packet`
    for (let k = 0; k < n; k++) {
      const id = layout.id === 2 ? u16(buf, p) : buf[p]
      io.push({ id, at: p + layout.id, size, variable: false })
      p += step
    }
  }
  if (layout.nx) {
    // [TDSP Codec 8 Extended / IO Element] NX: count, then per element its id (2), length (2) and value.
    if (p + 2 > limit) return 'its variable-length IO count runs past the end of the packet'
    const n = u16(buf, p)
    p += 2
    for (let k = 0; k < n; k++) {
      if (p + 4 > limit) return 'a variable-length IO element runs past the end of the packet'
      const id = u16(buf, p)
      const size = u16(buf, p + 2)
      p += 4
      if (p + size > limit) return `variable-length IO element ${id} runs past the end of the packet`
      io.push({ id, at: p, size, variable: true })
      p += size
    }
  }
  return { ts, priority, lon, lat, alt, angle, satellites, speed, eventIo, generation, io, start, end: p }
}

// ---------------------------------------------------------------- Codec 12 and 13

/**
 * [TDSP Codec 12 / Structure] Type: 0x05 a command (server to device), 0x06 a response (device to server).
 */
export const MESSAGE_TYPE = { command: 0x05, response: 0x06 } as const

/**
 * A Codec 12 packet carrying `command` as text ([TDSP Codec 12 / Structure]): preamble, Data Size (Codec ID to
 * Command Quantity 2), 0x0C, Command Quantity 1 (1), Type 0x05, Command Size (4), the command, Command
 * Quantity 2 (1), CRC-16 of Codec ID to Command Quantity 2. The docs' example: `getinfo` is
 * 000000000000000F0C010500000007676574696E666F0100004312.
 */
export function encodeCommand(command: string): Buffer {
  const text = Buffer.from(command, 'utf8')
  const length = 8 + text.length
  const buf = Buffer.alloc(HEADER + length + TRAILER)
  buf.writeUInt32BE(length, 4)
  buf[8] = CODEC.c12
  buf[9] = 1
  buf[10] = MESSAGE_TYPE.command
  buf.writeUInt32BE(text.length, 11)
  text.copy(buf, 15)
  buf[15 + text.length] = 1
  buf.writeUInt32BE(crc16(buf, HEADER, HEADER + length), HEADER + length)
  return buf
}

export type MessageResult =
  | { ok: true; type: number; text: string; bytes: Buffer; timestamp?: number }
  | { ok: false; why: string }

/**
 * A Codec 12 message in `buf[start, end)` (the data, Codec ID to Command Quantity 2): its type and text. The
 * quantities are not checked ("it is ignored when parsing the message", [TDSP Codec 12 / Structure]).
 */
export function decodeCodec12(buf: Uint8Array, start: number, end: number): MessageResult {
  if (end - start < 8 || buf[start] !== CODEC.c12) return { ok: false, why: 'not a Codec 12 message' }
  const type = buf[start + 2]
  const size = u32(buf, start + 3)
  if (start + 7 + size + 1 !== end)
    return { ok: false, why: `a Codec 12 size of ${size} that does not fit its ${end - start} bytes` }
  const bytes = Buffer.from(buf.subarray(start + 7, start + 7 + size))
  return { ok: true, type, text: bytes.toString('utf8'), bytes }
}

/**
 * A Codec 13 message in `buf[start, end)` ([TDSP Codec 13 / Structure]): Codec ID 0x0D, Command Quantity 1,
 * Type, Command Size ("includes size of timestamp too"), a 4-byte Timestamp, the text, Command Quantity 2.
 * The page calls the timestamp milliseconds, but it is 4 bytes, which hold seconds to the year 2106 and ms
 * only for 50 days past 1970: it is read as seconds. The page's own example has Type 0x05 where its text says
 * 0x06 ("since the packet direction is FM->Server"): both are taken.
 */
export function decodeCodec13(buf: Uint8Array, start: number, end: number): MessageResult {
  if (end - start < 12 || buf[start] !== CODEC.c13) return { ok: false, why: 'not a Codec 13 message' }
  const type = buf[start + 2]
  const size = u32(buf, start + 3)
  if (size < 4 || start + 7 + size + 1 !== end)
    return { ok: false, why: `a Codec 13 size of ${size} that does not fit its ${end - start} bytes` }
  const timestamp = u32(buf, start + 7) * 1000
  const bytes = Buffer.from(buf.subarray(start + 11, start + 7 + size))
  return { ok: true, type, text: bytes.toString('utf8'), bytes, timestamp }
}

// ---------------------------------------------------------------- UDP

export type UdpResult =
  | {
      ok: true
      packetId: number
      avlPacketId: number
      imei: string
      /** The AVL data array: [dataStart, datagram end). */
      dataStart: number
    }
  | { ok: false; why: string; imei?: string }

/**
 * [TDSP Codec 8 / UDP channel] a datagram: Length (2, of what follows it), Packet ID (2), a byte the page
 * calls "Not usable byte" (formerly Packet Type), AVL packet ID (1), IMEI length (2), the IMEI, and the AVL data
 * array (no preamble, no CRC: UDP's own checksum covers the datagram).
 */
export function parseUdp(buf: Uint8Array): UdpResult {
  if (buf.length < 8) return { ok: false, why: `a datagram of ${buf.length} bytes` }
  const length = u16(buf, 0)
  if (length + 2 !== buf.length)
    return { ok: false, why: `a Length of ${length} in a datagram of ${buf.length} bytes` }
  const packetId = u16(buf, 2)
  const avlPacketId = buf[5]
  const id = scanHandshake(buf, 6)
  if (id.kind !== 'imei') return { ok: false, why: id.kind === 'bad' ? id.why : 'no room for the IMEI' }
  return { ok: true, packetId, avlPacketId, imei: id.imei, dataStart: id.end }
}

/**
 * [TDSP Codec 8 / UDP channel] the server's answer: Length 0x0005, the datagram's Packet ID, the byte 0x01, its
 * AVL packet ID, and the number of records accepted. The page's example answers
 * 003DCAFE0105000F...01 with 0005CAFE010501.
 */
export function udpAck(packetId: number, avlPacketId: number, records: number): Buffer {
  return Buffer.from([0x00, 0x05, packetId >> 8, packetId & 0xff, 0x01, avlPacketId, records])
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0')
}
