/**
 * The Teltonika codec on its own: the documentation's hex examples decode to the values the documentation
 * gives them, the documentation's command and acks are produced byte for byte, and each kind of broken packet
 * is told apart.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  CODEC,
  Frame,
  type TcpScan,
  crc16,
  crcMatches,
  decodeAvl,
  decodeCodec12,
  decodeCodec13,
  encodeCommand,
  parseUdp,
  scanHandshake,
  scanTcp,
  tcpAck,
  udpAck,
} from '../../../src/gateway/teltonika/codec.js'
import { avlReadings, msgIdOf } from '../../../src/gateway/teltonika/readings.js'
import { judgePayload } from '../../../src/readings/index.js'
import { DOCS, avlData, avlPacket, frame, hex, imeiFrame } from '../../helpers/teltonika.js'

const scan: TcpScan = { kind: 0, end: 0, length: 0 }

/** The readings of a documented TCP packet, checked to frame and to match its CRC first. */
function readingsOf(h: string) {
  const b = hex(h)
  scanTcp(b, 0, scan)
  assert.equal(scan.kind, Frame.packet)
  assert.equal(scan.end, b.length)
  assert.ok(crcMatches(b, 0, b.length))
  const avl = decodeAvl(b, 8, b.length - 4)
  assert.ok(avl.ok, avl.ok ? '' : avl.why)
  const { json, plain } = avlReadings(b, avl.records)
  assert.equal(plain, true)
  return JSON.parse(json).map(({ msgId, ...rest }: Record<string, unknown>) => {
    assert.match(String(msgId), /^\d+-[0-9a-f]{16}$/)
    return rest
  })
}

/** The one reading of an AVL data array of one record. */
function readingOf(data: Buffer): Record<string, unknown> {
  const avl = decodeAvl(data, 0, data.length)
  assert.ok(avl.ok)
  const [r] = JSON.parse(avlReadings(data, avl.records).json)
  return r
}

describe('the documentation examples', () => {
  test('Codec 8, 1st example: timestamp, priority, event id and IO elements of 1, 2, 4 and 8 bytes', () => {
    // The page reads it: 2019-06-10 10:04:46 UTC, priority 1, no fix, event IO 1; IO 21 = 3, 1 = 1,
    // 66 = 0x5E0F, 241 = 0x601A, 78 = 0.
    assert.deepEqual(readingsOf(DOCS.codec8a), [
      {
        ts: Date.UTC(2019, 5, 10, 10, 4, 46),
        sats: 0,
        priority: 1,
        eventIo: 1,
        gsmSignal: 3,
        din1: true,
        externalVoltage: 24.079,
        gsmOperator: 24602,
        iButton: '0000000000000000',
      },
    ])
  })

  test('Codec 8, 2nd and 3rd examples: one record, then two', () => {
    assert.deepEqual(readingsOf(DOCS.codec8b), [
      {
        ts: 1560161136000,
        sats: 0,
        priority: 1,
        eventIo: 1,
        gsmSignal: 3,
        din1: true,
        externalVoltage: 24.08,
      },
    ])
    assert.deepEqual(readingsOf(DOCS.codec8c), [
      { ts: 1560160861000, sats: 0, priority: 1, eventIo: 1, din1: false },
      { ts: 1560160879000, sats: 0, priority: 1, eventIo: 1, din1: true },
    ])
  })

  test('Codec 8 Extended: two-byte ids and counts', () => {
    // IO 1 = 1, 17 = 0x001D, 16 = 0x015E2C88, 11 = 0x3544C87A, 14 = 0x1DD7E06A (the page's reading).
    assert.deepEqual(readingsOf(DOCS.codec8e), [
      {
        ts: 1560166592000,
        sats: 0,
        priority: 1,
        eventIo: 1,
        din1: true,
        io17: 29,
        totalOdometer: 22949000,
        io11: 893700218,
        io14: 500686954,
      },
    ])
  })

  test('Codec 16: two-byte ids, one-byte counts, the generation type', () => {
    const common = { sats: 0, priority: 0, eventIo: 11, generationType: 5, din1: false, din3: false }
    assert.deepEqual(readingsOf(DOCS.codec16), [
      { ts: 1562760414000, ...common, io11: 39, externalVoltage: 22.074 },
      { ts: 1562760415000, ...common, io11: 38, externalVoltage: 22.074 },
    ])
  })

  test('Codec 12: the getinfo command is encoded byte for byte as the documentation shows it', () => {
    assert.equal(encodeCommand('getinfo').toString('hex').toUpperCase(), DOCS.codec12Getinfo)
  })

  test("Codec 12: the device's response decodes to its text", () => {
    const b = hex(DOCS.codec12Response)
    assert.ok(crcMatches(b, 0, b.length))
    const m = decodeCodec12(b, 8, b.length - 4)
    assert.ok(m.ok)
    assert.equal(m.type, 0x06)
    assert.equal(m.text, DOCS.codec12ResponseText)
  })

  test('Codec 13: the text after its 4-byte timestamp, read as seconds', () => {
    const b = hex(DOCS.codec13)
    assert.ok(crcMatches(b, 0, b.length))
    const m = decodeCodec13(b, 8, b.length - 4)
    assert.ok(m.ok)
    assert.equal(m.text, 'getinfo')
    assert.equal(m.timestamp, 0x0a81c320 * 1000)
  })

  test('UDP: the datagram header is read and the ack is the documented one', () => {
    const b = hex(DOCS.udpCodec8)
    const d = parseUdp(b)
    assert.ok(d.ok)
    assert.deepEqual(
      { packetId: d.packetId, avlPacketId: d.avlPacketId, imei: d.imei },
      { packetId: 0xcafe, avlPacketId: 0x05, imei: DOCS.udpImei },
    )
    const avl = decodeAvl(b, d.dataStart, b.length)
    assert.ok(avl.ok)
    assert.equal(avl.records.length, 1)
    assert.equal(udpAck(d.packetId, d.avlPacketId, 1).toString('hex'), DOCS.udpCodec8Ack)
    const e = parseUdp(hex(DOCS.udpCodec8e))
    assert.ok(e.ok)
    assert.equal(udpAck(e.packetId, e.avlPacketId, 1).toString('hex'), DOCS.udpCodec8eAck)
  })

  test('the TCP ack is the record count in 4 bytes', () => {
    assert.equal(tcpAck(2).toString('hex'), '00000002')
  })

  test("the handshake: the documentation's IMEI frame", () => {
    const h = scanHandshake(hex('000F333536333037303432343431303133'), 0)
    assert.deepEqual(h, { kind: 'imei', imei: '356307042441013', end: 17 })
  })
})

describe('CRC-16/IBM', () => {
  test('the standard check value of "123456789" is 0xBB3D', () => {
    assert.equal(crc16(Buffer.from('123456789')), 0xbb3d)
  })

  test('a packet with one bit flipped no longer matches', () => {
    const b = hex(DOCS.codec8a)
    b[20] ^= 0x04
    assert.equal(crcMatches(b, 0, b.length), false)
  })

  test('non-zero upper bytes of the CRC field are a mismatch', () => {
    const b = hex(DOCS.codec8a)
    b[b.length - 4] = 0x01
    assert.equal(crcMatches(b, 0, b.length), false)
  })
})

describe('records as readings', () => {
  test('a fix gives lat, lon (negative west and south), alt, heading, speed in km/h and sats', () => {
    const data = avlData('8', [
      {
        ts: 1_700_000_000_000,
        lat: -33.8688197,
        lon: -151.2092955,
        alt: -12,
        angle: 275,
        sats: 9,
        speed: 87,
      },
    ])
    const { msgId, ...r } = readingOf(data)
    assert.deepEqual(r, {
      ts: 1_700_000_000_000,
      lat: -33.8688197,
      lon: -151.2092955,
      alt: -12,
      heading: 275,
      speed: 87,
      sats: 9,
      priority: 0,
      eventIo: 0,
    })
  })

  test('a record without a fix keeps its IO values and leaves the position out', () => {
    // [TDSP] without a fix the coordinates are the last fix's (or 0, 0): not where the device is now.
    const data = avlData('8', [{ ts: 1_700_000_000_000, lat: 54.7, lon: 25.3, sats: 0, io: [[239, 1, 1]] }])
    const { msgId, ...r } = readingOf(data)
    assert.deepEqual(r, { ts: 1_700_000_000_000, sats: 0, priority: 0, eventIo: 0, ignition: true })
  })

  test('OBD elements are named and scaled as documented; signed ones read as signed', () => {
    const data = avlData('8e', [
      {
        ts: 1_700_000_000_000,
        io: [
          [36, 2, 2150], // rpm
          [37, 1, 62], // vehicle speed, km/h
          [32, 1, 0xf6], // coolant temperature -10 °C
          [31, 1, 44], // engine load %
          [60, 2, 1234], // fuel rate 12.34 l/h
          [66, 2, 12850], // external voltage 12.85 V
          [84, 2, 455], // fuel level 45.5 l
          [89, 1, 71], // fuel level %
          [199, 4, 1500], // trip odometer m
          [179, 1, 0], // dout1
        ],
        nx: [[256, Buffer.from('WVWZZZAUZFW125650')]],
      },
    ])
    const r = readingOf(data)
    assert.equal(r.rpm, 2150)
    assert.equal(r.vehicleSpeed, 62)
    assert.equal(r.coolantTemperature, -10)
    assert.equal(r.engineLoad, 44)
    assert.equal(r.fuelRate, 12.34)
    assert.equal(r.externalVoltage, 12.85)
    assert.equal(r.fuelLevelLitres, 45.5)
    assert.equal(r.fuelLevelPercent, 71)
    assert.equal(r.tripOdometer, 1500)
    assert.equal(r.dout1, false)
    assert.equal(r.vin, 'WVWZZZAUZFW125650')
  })

  test('an element of another size than documented is kept raw as io<ID>; unknown ids too; 8-byte values past 2^53 as text', () => {
    const data = avlData('8e', [
      {
        ts: 1_700_000_000_000,
        io: [
          [66, 4, 99], // external voltage is 2 bytes in the FMB list: another family's element 66
          [9999, 2, 7],
          [11, 8, 2n ** 60n + 1n],
        ],
        nx: [[4000, Buffer.from([0xde, 0xad])]],
      },
    ])
    const r = readingOf(data)
    assert.equal(r.io66, 99)
    assert.equal(r.externalVoltage, undefined)
    assert.equal(r.io9999, 7)
    assert.equal(r.io11, (2n ** 60n + 1n).toString())
    assert.equal(r.io4000, 'dead')
  })

  test('readings the rule would refuse are not called plain, and the rule does refuse them', () => {
    const cases: Array<[string, Buffer]> = [
      ['a latitude past 90', avlData('8', [{ ts: 1_700_000_000_000, lat: 95, lon: 0, sats: 4 }])],
      ['a timestamp past 9999', avlData('8', [{ ts: 300_000_000_000_000 }])],
      [
        'a value of 3,000 bytes (6,000 hex digits)',
        avlData('8e', [{ ts: 1, nx: [[500, Buffer.alloc(3000)]] }]),
      ],
      [
        'more than 256 values',
        avlData('8e', [
          { ts: 1, io: Array.from({ length: 260 }, (_, i) => [1000 + i, 1, 0] as [number, 1, number]) },
        ]),
      ],
    ]
    for (const [what, data] of cases) {
      const avl = decodeAvl(data, 0, data.length)
      assert.ok(avl.ok, what)
      const r = avlReadings(data, avl.records)
      assert.equal(r.plain, false, what)
      assert.equal(judgePayload(r.json).valid, 0, what)
    }
  })

  test('msgId: the same record bytes give the same id; a change in them another', () => {
    const a = hex(DOCS.codec8a)
    const b = hex(DOCS.codec8a)
    assert.equal(msgIdOf(1, a), msgIdOf(1, b))
    b[30] ^= 1
    assert.notEqual(msgIdOf(1, a), msgIdOf(1, b))
  })
})

describe('what is wrong with a packet', () => {
  test('Number of Data 1 and 2 that disagree', () => {
    const data = avlData('8', [{ ts: 1 }, { ts: 2 }], 1)
    const r = decodeAvl(data, 0, data.length)
    assert.ok(!r.ok)
    assert.match(r.why, /Number of Data 1 is 2 but Number of Data 2 is 1/)
  })

  test('a record count larger than the records sent', () => {
    const data = avlData('8', [{ ts: 1 }])
    data[1] = 3
    const r = decodeAvl(data, 0, data.length)
    assert.ok(!r.ok)
    assert.match(r.why, /runs past the end/)
  })

  test('an unknown codec, and no records', () => {
    const data = avlData('8', [{ ts: 1 }])
    data[0] = 0x42
    assert.ok(!decodeAvl(data, 0, data.length).ok)
    assert.ok(!decodeAvl(Buffer.from([CODEC.c8, 0, 0]), 0, 3).ok)
  })

  test('framing: a preamble that is not zeros is garbage at its first byte; a length over the limit is refused unread', () => {
    assert.equal(scanTcp(Buffer.from([0x00, 0x07]), 0, scan).kind, Frame.garbage)
    const long = Buffer.from([0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])
    assert.equal(scanTcp(long, 0, scan).kind, Frame.tooLong)
    assert.equal(scan.length, 0x7fffffff)
    assert.equal(scanTcp(Buffer.from([0xff]), 0, scan).kind, Frame.ping)
    const p = avlPacket('8', [{ ts: 1 }])
    assert.equal(scanTcp(p.subarray(0, p.length - 1), 0, scan).kind, Frame.need)
    assert.equal(scan.end, p.length)
  })

  test('the handshake: an IMEI length of 0 or over 32, and bytes that are not printable, are refused', () => {
    assert.equal(scanHandshake(Buffer.from([0, 0]), 0).kind, 'bad')
    assert.equal(scanHandshake(Buffer.from([0, 33]), 0).kind, 'bad')
    assert.equal(scanHandshake(Buffer.from([0, 2, 0x31, 0x00]), 0).kind, 'bad')
    assert.equal(scanHandshake(imeiFrame('35209308').subarray(0, 5), 0).kind, 'need')
  })

  test('a Codec 12 size that does not fit its packet', () => {
    const b = frame(Buffer.from([0x0c, 1, 6, 0, 0, 0, 9, 0x41, 1]))
    assert.ok(!decodeCodec12(b, 8, b.length - 4).ok)
  })

  test('a UDP Length that is not the datagram length', () => {
    const b = hex(DOCS.udpCodec8)
    b[1]++
    assert.ok(!parseUdp(b).ok)
  })
})
