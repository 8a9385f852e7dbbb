/**
 * Teltonika trackers for the simulator, and the one encoder of Teltonika packets that the tests and the bench
 * use too: AVL data of Codec 8, 8 Extended and 16 for any records, TCP framing with the CRC-16/IBM (the
 * gateway's own crc16), UDP datagrams, Codec 12/13 messages and the IMEI handshake's frame.
 *
 * References are to Teltonika's "Teltonika Data Sending Protocols" page
 * (https://wiki.teltonika-gps.com/view/Teltonika_Data_Sending_Protocols), written [TDSP <codec> / <section>] as
 * in src/gateway/teltonika/codec.ts, and to the FMB AVL ID list for the IO elements ([AVL ID <section>], as in
 * src/gateway/teltonika/io-elements.ts).
 */
import type { Socket } from 'node:net'
import { crc16 } from '../gateway/teltonika/codec.js'
import type { SenderFactory } from './senders.js'
import { StreamDevice, streamSender } from './stream-device.js'

/** One record to encode: the GPS element (degrees, m, km/h) and IO elements by size. */
export interface RecordSpec {
  ts: number
  priority?: number
  lat?: number
  lon?: number
  alt?: number
  angle?: number
  sats?: number
  speed?: number
  eventIo?: number
  /** Codec 16's generation type. */
  generation?: number
  /** [id, size (1, 2, 4 or 8), value] */
  io?: Array<[number, 1 | 2 | 4 | 8, number | bigint]>
  /** Codec 8 Extended's variable-length elements: [id, bytes]. */
  nx?: Array<[number, Buffer]>
}

export type AvlCodec = '8' | '8e' | '16'
const CODEC_IDS: Record<AvlCodec, number> = { '8': 0x08, '8e': 0x8e, '16': 0x10 }

/**
 * The AVL data array (Codec ID to Number of Data 2) of `records` ([TDSP Codec 8 / AVL Data], [TDSP Codec 8
 * Extended / AVL Data]: 2-byte IO ids and counts, and the NX elements; [TDSP Codec 16 / AVL Data]: 2-byte ids,
 * 1-byte counts, the generation type); `n2` to make the counts disagree.
 */
export function avlData(codec: AvlCodec, records: RecordSpec[], n2 = records.length): Buffer {
  const parts: Buffer[] = [Buffer.from([CODEC_IDS[codec], records.length])]
  const wide = codec === '8e'
  const idLen = codec === '8' ? 1 : 2
  const countLen = wide ? 2 : 1
  const num = (n: number, len: number) => {
    const b = Buffer.alloc(len)
    b.writeUIntBE(n, 0, len)
    return b
  }
  for (const r of records) {
    const head = Buffer.alloc(24)
    head.writeBigUInt64BE(BigInt(r.ts), 0)
    head[8] = r.priority ?? 0
    head.writeInt32BE(Math.round((r.lon ?? 0) * 1e7), 9)
    head.writeInt32BE(Math.round((r.lat ?? 0) * 1e7), 13)
    head.writeInt16BE(r.alt ?? 0, 17)
    head.writeUInt16BE(r.angle ?? 0, 19)
    head[21] = r.sats ?? 0
    head.writeUInt16BE(r.speed ?? 0, 22)
    parts.push(head, num(r.eventIo ?? 0, codec === '8' ? 1 : 2))
    if (codec === '16') parts.push(Buffer.from([r.generation ?? 0]))
    const io = r.io ?? []
    const nx = wide ? (r.nx ?? []) : []
    parts.push(num(io.length + nx.length, countLen))
    for (const size of [1, 2, 4, 8] as const) {
      const group = io.filter(([, s]) => s === size)
      parts.push(num(group.length, countLen))
      for (const [id, , value] of group) {
        const v = Buffer.alloc(size)
        if (size === 8) v.writeBigUInt64BE(BigInt(value), 0)
        else v.writeUIntBE(Number(value), 0, size)
        parts.push(num(id, idLen), v)
      }
    }
    if (wide) {
      parts.push(num(nx.length, 2))
      for (const [id, bytes] of nx) parts.push(num(id, 2), num(bytes.length, 2), bytes)
    }
  }
  parts.push(Buffer.from([n2]))
  return Buffer.concat(parts)
}

/**
 * A TCP packet around `data` (a Codec ID to Number of Data 2 array): [TDSP Codec 8 / AVL Data Packet] four zero
 * bytes, the Data Field Length, the data, and the CRC-16/IBM of the data in four bytes.
 */
export function frame(data: Buffer, crc = crc16(data)): Buffer {
  const b = Buffer.alloc(12 + data.length)
  b.writeUInt32BE(data.length, 4)
  data.copy(b, 8)
  b.writeUInt32BE(crc, 8 + data.length)
  return b
}

/** A TCP AVL packet of `records`. */
export function avlPacket(codec: AvlCodec, records: RecordSpec[]): Buffer {
  return frame(avlData(codec, records))
}

/**
 * [TDSP Sending data using UDP channel] a datagram: Length, Packet ID, the unused byte 0x01, AVL packet ID, the
 * IMEI, the AVL data array.
 */
export function udpDatagram(imei: string, packetId: number, avlPacketId: number, data: Buffer): Buffer {
  const id = Buffer.from(imei, 'ascii')
  const b = Buffer.alloc(8 + id.length + data.length)
  b.writeUInt16BE(b.length - 2, 0)
  b.writeUInt16BE(packetId, 2)
  b[4] = 0x01
  b[5] = avlPacketId
  b.writeUInt16BE(id.length, 6)
  id.copy(b, 8)
  data.copy(b, 8 + id.length)
  return b
}

/** [TDSP Codec 12 / Codec 13] a response (type 0x06) or message carrying `text`, framed, as a device sends it. */
export function messagePacket(codec: 12 | 13, text: string, timestampSeconds = 0): Buffer {
  const body = Buffer.from(text, 'utf8')
  const ts = codec === 13 ? 4 : 0
  const data = Buffer.alloc(8 + ts + body.length)
  data[0] = codec === 12 ? 0x0c : 0x0d
  data[1] = 1
  data[2] = 0x06
  data.writeUInt32BE(body.length + ts, 3)
  if (ts) data.writeUInt32BE(timestampSeconds, 7)
  body.copy(data, 7 + ts)
  data[data.length - 1] = 1
  return frame(data)
}

/** [TDSP Codec 8 / Communication with server] the handshake's first frame: the IMEI's length and the IMEI. */
export function imeiFrame(imei: string): Buffer {
  const id = Buffer.from(imei, 'ascii')
  return Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id])
}

/**
 * The IO elements a simulated vehicle's values go as, by [AVL ID] id and documented size, so that the gateway
 * stores them under its names: ignition (239), the OBD vehicle speed (37, km/h), rpm (36), coolant temperature
 * (32, °C), fuel level (48, %), and the total odometer (16, m).
 */
const IO = {
  ignition: [239, 1],
  vehicleSpeed: [37, 1],
  rpm: [36, 2],
  coolantTemperature: [32, 1],
  obdFuelLevel: [48, 1],
  totalOdometer: [16, 4],
} as const

/** Satellites in a simulated fix: a record with 0 is one without a fix, whose position the gateway leaves out. */
const SATELLITES = 11

const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
const byte = (v: number) => Math.min(255, Math.max(0, Math.round(v)))

/**
 * A simulated vehicle's reading (vehicle.ts's values) as a Codec 8 Extended record: the GPS element with its
 * position, heading and speed, and the OBD values as IO elements. `seq` and `msgId` have no place in a record:
 * the gateway makes each record's msgId from its time and bytes.
 */
export function vehicleRecord(r: Record<string, unknown>): RecordSpec {
  const speed = num(r.speed)
  return {
    ts: num(r.ts),
    lat: num(r.lat),
    lon: num(r.lon),
    alt: 120,
    angle: Math.round(num(r.heading)) % 360,
    sats: SATELLITES,
    speed: Math.round(speed),
    io: [
      [IO.ignition[0], IO.ignition[1], r.ignition ? 1 : 0],
      [IO.vehicleSpeed[0], IO.vehicleSpeed[1], byte(speed)],
      [IO.rpm[0], IO.rpm[1], Math.min(0xffff, Math.round(num(r.rpm)))],
      [IO.coolantTemperature[0], IO.coolantTemperature[1], Math.min(127, byte(num(r.coolant)))],
      [IO.obdFuelLevel[0], IO.obdFuelLevel[1], byte(num(r.fuel))],
      [IO.totalOdometer[0], IO.totalOdometer[1], Math.round(num(r.odometer) * 1000)],
    ],
  }
}

/**
 * Records per packet at most: [TDSP Codec 8 / AVL Data Packet, the note] 1,280 bytes is the largest AVL packet
 * every device family but the FMB6 one takes, and a simulated record is about 60 bytes.
 */
const RECORDS_PER_PACKET = 20

/**
 * A tracker over TCP: [TDSP Codec 8 / Communication with server] the IMEI, answered 01 (or 00, and the close, for
 * an IMEI the platform does not know: tried again later); then one Codec 8 Extended packet of what is queued at
 * a time, the next once the server's 4-byte ack (the packet's record count) came. An ack of another count, or a
 * lost connection, and the packet goes again (the same records: the same msgIds, stored once).
 */
class Tracker extends StreamDevice {
  private rest: Buffer | null = null

  constructor(
    host: string,
    port: number,
    private readonly imei: string,
    events: ConstructorParameters<typeof StreamDevice>[2],
    onOpen: () => void,
  ) {
    super(host, port, events, onOpen)
  }

  protected greeting(): Buffer {
    return imeiFrame(this.imei)
  }

  protected received(data: Buffer): void {
    let buf = data
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, data])
      this.rest = null
    }
    let i = 0
    if (!this.open) {
      if (buf[0] !== 0x01) return this.turnedAway()
      i = 1
      this.accepted()
    }
    for (; i + 4 <= buf.length; i += 4) {
      const n = buf.readUInt32BE(i)
      if (n !== this.inflight.length || n === 0) return this.drop()
      this.answered(n)
    }
    if (i < buf.length) this.rest = Buffer.from(buf.subarray(i))
    this.flush()
  }

  protected write(socket: Socket): void {
    if (this.inflight.length > 0) return
    this.inflight = this.queue.splice(0, RECORDS_PER_PACKET)
    socket.write(
      avlPacket(
        '8e',
        this.inflight.map((q) => vehicleRecord(q.reading)),
      ),
    )
  }

  protected reset(): void {
    this.rest = null
  }
}

/** Teltonika over TCP, one connection per tracker, known by its IMEI. */
export const teltonikaSender: SenderFactory = (target, devices, events) =>
  streamSender(
    devices.length,
    (i, onOpen) => new Tracker(target.host, target.teltonikaPort, devices[i].imei, events, onOpen),
  )
