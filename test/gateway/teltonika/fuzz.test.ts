/**
 * Fuzzing the Teltonika codec and the connection's framing with random bytes and mutated real packets (the
 * documentation's, and generated ones of every codec): well over a million inputs, counted, not timed. Nothing
 * may throw, and no connection may be left waiting without a deadline or holding more than one frame's bytes.
 * A fixed seed makes any failure reproducible as it is (the seed and input are in the message).
 */
import assert from 'node:assert/strict'
import { Duplex } from 'node:stream'
import { after, before, test } from 'node:test'
import {
  Frame,
  HEADER,
  MAX_DATA_LENGTH,
  TRAILER,
  type TcpScan,
  crc16,
  crcMatches,
  decodeAvl,
  decodeCodec12,
  decodeCodec13,
  parseUdp,
  scanHandshake,
  scanTcp,
} from '../../../src/gateway/teltonika/codec.js'
import { ConnState } from '../../../src/gateway/teltonika/connection.js'
import { avlReadings, messageReading } from '../../../src/gateway/teltonika/readings.js'
import { judgePayload } from '../../../src/readings/index.js'
import { type Platform, startPlatform } from '../../helpers/index.js'
import { prng } from '../../helpers/payloads.js'
import {
  DOCS,
  RawTeltonika,
  ackHex,
  avlPacket,
  frame,
  hex,
  imeiFrame,
  messagePacket,
} from '../../helpers/teltonika.js'

/** Inputs to the codec functions, and byte chunks fed to connections. */
const CODEC_INPUTS = 1_000_000
const STREAMS = 4_000

const SEED = 0x7e170
const r = prng(SEED)
const int = (n: number) => Math.floor(r() * n)

/** Real packets to mutate: the documentation's, and generated ones of every codec and shape. */
const CORPUS: Buffer[] = [
  ...[DOCS.codec8a, DOCS.codec8b, DOCS.codec8c, DOCS.codec8e, DOCS.codec16].map(hex),
  hex(DOCS.codec12Response),
  hex(DOCS.codec13),
  hex(DOCS.udpCodec8),
  hex(DOCS.udpCodec8e),
  avlPacket('8', [
    {
      ts: 1_750_000_000_000,
      lat: 54.7,
      lon: 25.3,
      sats: 9,
      speed: 50,
      io: [
        [239, 1, 1],
        [66, 2, 12800],
        [16, 4, 123456],
        [78, 8, 1n],
      ],
    },
  ]),
  avlPacket('8e', [
    {
      ts: 1_750_000_000_000,
      lat: -1,
      lon: -2,
      sats: 3,
      io: [
        [36, 2, 900],
        [32, 1, 200],
      ],
      nx: [
        [256, Buffer.from('VIN0123456789ABCD')],
        [900, Buffer.alloc(40, 7)],
      ],
    },
    { ts: 1_750_000_001_000, io: [[11, 8, 2n ** 63n]] },
  ]),
  avlPacket('16', [
    {
      ts: 1_750_000_000_000,
      generation: 3,
      eventIo: 300,
      io: [
        [300, 2, 5],
        [1, 1, 1],
      ],
    },
  ]),
  avlPacket('8', [{ ts: 1_750_000_000_000, lat: 90, lon: -180, sats: 1 }]),
  messagePacket(12, 'DOUT1:1 DOUT2:0'),
  messagePacket(13, 'hello', 1_750_000_000),
]

/**
 * Packets at the reading rule's limits, where a mutation tips a reading from plain to refused: a 2,040-byte
 * value (4,080 hex digits of the 4,096 allowed) and 250 IO elements (of 256 values). Large, so drawn less often.
 */
const EDGES: Buffer[] = [
  avlPacket('8e', [{ ts: 1_750_000_000_000, nx: [[501, Buffer.alloc(2040, 0x5a)]] }]),
  avlPacket('8e', [
    {
      ts: 1_750_000_000_000,
      io: Array.from({ length: 250 }, (_, i) => [2000 + i, 1, i] as [number, 1, number]),
    },
  ]),
]
const EDGE_SHARE = 0.02

/** The corpus's TCP packets (not the UDP datagrams), as a device sends them. */
const TCP_PACKETS = CORPUS.filter((b) => b.readUInt32BE(0) === 0)

/** One of many ways to break a packet; `fixCrc` then makes the framing and CRC right again, to reach decoding. */
function mutate(src: Buffer): Buffer {
  let b = Buffer.from(src)
  for (let k = 1 + int(4); k > 0; k--) {
    switch (int(7)) {
      case 0:
        if (b.length) b[int(b.length)] ^= 1 << int(8)
        break
      case 1:
        if (b.length) b[int(b.length)] = int(256)
        break
      case 2:
        b = b.subarray(0, int(b.length + 1))
        break
      case 3: {
        const at = int(b.length + 1)
        b = Buffer.concat([b.subarray(0, at), randomBytes(1 + int(8)), b.subarray(at)])
        break
      }
      case 4: {
        const at = int(b.length + 1)
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + int(8))])
        break
      }
      case 5:
        // A count or length field: the bytes that hold them sit near the front.
        if (b.length > 12) b[8 + int(Math.min(8, b.length - 8))] = [0, 1, 2, 0xff, 0x7f][int(5)]
        break
      default:
        b = Buffer.concat([b, CORPUS[int(CORPUS.length)].subarray(0, int(60))])
    }
  }
  return b
}

/** The packet with its Data Field Length and CRC made to agree with its bytes. */
function fixCrc(b: Buffer): Buffer {
  if (b.length < HEADER + TRAILER + 3) return b
  const data = b.subarray(HEADER, b.length - TRAILER)
  return frame(Buffer.from(data), crc16(data))
}

function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = int(256)
  return b
}

/** A fuzz input: random bytes, a mutated real packet (with its CRC fixed half the time), or two spliced. */
function input(): Buffer {
  const mode = int(10)
  if (mode === 0) return randomBytes(int(200))
  if (mode === 1) {
    // Random bytes behind a valid-looking header, so that decoding is reached.
    const body = randomBytes(3 + int(120))
    return frame(body, r() < 0.5 ? crc16(body) : int(65536))
  }
  const src = r() < EDGE_SHARE ? EDGES[int(EDGES.length)] : CORPUS[int(CORPUS.length)]
  if (mode === 2) return Buffer.concat([src.subarray(0, int(src.length)), CORPUS[int(CORPUS.length)]])
  const m = mutate(src)
  return r() < 0.5 ? fixCrc(m) : m
}

const scan: TcpScan = { kind: 0, end: 0, length: 0 }

/**
 * The readings of decoded records: JSON that parses to one reading per record; and when they are called plain
 * (the gateway then lets the ingest take them without judging), the rule must indeed refuse none of them.
 */
function readings(b: Buffer, records: Parameters<typeof avlReadings>[1]): void {
  const r = avlReadings(b, records)
  assert.equal(JSON.parse(r.json).length, records.length)
  if (r.plain) assert.equal(judgePayload(r.json).rejections.length, 0, r.json)
}

/** Every codec function over one input, as the gateway would call them. */
function exercise(b: Buffer): void {
  scanHandshake(b, 0)
  scanTcp(b, 0, scan)
  if (scan.kind === Frame.packet) {
    crcMatches(b, 0, scan.end)
    const start = HEADER
    const end = scan.end - TRAILER
    const avl = decodeAvl(b, start, end)
    if (avl.ok) {
      assert.ok(avl.records.length >= 1 && avl.records.length <= 255)
      for (const rec of avl.records) assert.ok(rec.start >= start && rec.end <= end && rec.start < rec.end)
      readings(b, avl.records)
    }
    for (const m of [decodeCodec12(b, start, end), decodeCodec13(b, start, end)]) {
      if (m.ok) JSON.parse(messageReading(m.text, m.bytes, m.timestamp ?? 0).json)
    }
  }
  const d = parseUdp(b)
  if (d.ok) {
    const avl = decodeAvl(b, d.dataStart, b.length)
    if (avl.ok) readings(b, avl.records)
  }
  // The bytes as an AVL data array by themselves.
  decodeAvl(b, 0, b.length)
}

test(`the codec: ${CODEC_INPUTS.toLocaleString('en')} random and mutated packets, nothing throws`, (t) => {
  const cpu = process.cpuUsage()
  let decoded = 0
  for (let i = 0; i < CODEC_INPUTS; i++) {
    const b = input()
    try {
      exercise(b)
    } catch (err) {
      assert.fail(`seed ${SEED}, input ${i} (${b.toString('hex')}): ${(err as Error).stack}`)
    }
    if (b.length >= 12 && crcMatches(b, 0, b.length)) decoded++
  }
  // The inputs reach past the CRC check, so decoding itself was fuzzed.
  assert.ok(decoded > CODEC_INPUTS / 10, `${decoded} inputs had a valid CRC`)
  const used = process.cpuUsage(cpu)
  t.diagnostic(`${decoded} inputs with a valid CRC; ${((used.user + used.system) / 1e6).toFixed(1)} s of CPU`)
})

let p: Platform
let imei = ''

before(async () => {
  p = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0' })
  imei = '353201350000001'
  await p.createDevice('fuzzed tracker', { imei })
})
after(() => p.stop())

/** A connection's byte stream: the handshake (mostly right), then packets, pings, mutations and garbage. */
function stream(): Buffer {
  const parts: Buffer[] = [r() < 0.9 ? imeiFrame(imei) : input().subarray(0, 40)]
  for (let k = int(6); k > 0; k--) {
    const what = int(6)
    if (what === 0) parts.push(Buffer.from([0xff]))
    else if (what <= 2) parts.push(TCP_PACKETS[int(TCP_PACKETS.length)])
    else parts.push(input())
  }
  return Buffer.concat(parts)
}

/** A device's end of a connection in memory: what it is sent is dropped; what it sends is pushed. */
function wire(n: number): Duplex & { remoteAddress: string } {
  const d = new Duplex({
    read() {},
    write(_chunk, _enc, cb) {
      cb()
    },
  })
  // Each its own address, so that the refused handshakes never reach the per-address limit.
  return Object.assign(d, { remoteAddress: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` })
}

test(`the connection framing: ${STREAMS.toLocaleString('en')} streams in random chunks; none throws, none hangs`, async (t) => {
  const gw = p.app.teltonika!
  let chunks = 0
  for (let n = 0; n < STREAMS; n++) {
    const bytes = stream()
    const d = wire(n)
    const c = gw.accept(d)
    assert.ok(c)
    for (let at = 0; at < bytes.length; ) {
      const size = 1 + int(r() < 0.3 ? 8 : 300)
      d.push(bytes.subarray(at, at + size))
      at += size
      chunks++
    }
    await new Promise((resolve) => setImmediate(resolve))
    // Not hung: closed, or holding at most one frame's bytes with a deadline, or idle between packets.
    if (!c.isClosed) {
      assert.ok(c.pendingBytes <= HEADER + MAX_DATA_LENGTH + TRAILER)
      assert.ok(c.pendingBytes === 0 || c.deadline > 0 || c.isPaused, `stream ${n} waits without a deadline`)
      if (c.state === ConnState.handshake) assert.ok(c.deadline > 0)
    }
    d.destroy()
  }
  t.diagnostic(`${chunks} chunks`)
  // The gateway still serves a device after all of it.
  const dev = await RawTeltonika.connected(gw.port, imei)
  dev.write(hex(DOCS.codec8c))
  assert.equal((await dev.read(4)).toString('hex'), ackHex(2))
  dev.destroy()
})
