/**
 * Teltonika over UDP on the TCP port's number, with a real datagram socket: the documentation's datagrams are
 * answered with the documented ack once stored, a datagram sent again is stored once, unknown IMEIs and
 * malformed datagrams are not answered (the latter quarantined).
 */
import assert from 'node:assert/strict'
import { type Socket, createSocket } from 'node:dgram'
import { after, before, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { drained, quarantined, rows } from '../../helpers/stored.js'
import { DOCS, LIVENESS_MS, avlData, hex, shown, udpDatagram } from '../../helpers/teltonika.js'

let p: Platform
let port: number
let client: Socket
const replies: Buffer[] = []

/** The next datagram the gateway answers with. */
async function reply(): Promise<Buffer> {
  await waitFor(() => replies.length > 0, LIVENESS_MS, 'a UDP answer')
  return replies.shift()!
}

function send(datagram: Buffer): void {
  client.send(datagram, port, '127.0.0.1')
}

before(async () => {
  p = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0' })
  port = p.app.teltonika!.udpPort
  assert.equal(port, p.app.teltonika!.port)
  client = createSocket('udp4')
  client.on('message', (m) => replies.push(m))
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()))
})
after(async () => {
  client.close()
  await p.stop()
})

test("the documentation's Codec 8 and 8 Extended datagrams get the documented acks and are stored", async () => {
  const { id } = await p.createDevice('udp tracker', { imei: DOCS.udpImei })
  send(hex(DOCS.udpCodec8))
  assert.equal((await reply()).toString('hex'), DOCS.udpCodec8Ack)
  send(hex(DOCS.udpCodec8e))
  assert.equal((await reply()).toString('hex'), DOCS.udpCodec8eAck)
  const stored = await waitFor(async () => {
    const r = await rows(p, id)
    return r.length === 2 && r
  })
  const byTs = Object.fromEntries(stored.map((r) => [r.ts, r.values]))
  // The 8 Extended example: IO 1 = 1, 17 = 0x009D, 16 = 0x015E2C88, 11, 14.
  assert.deepEqual(byTs[1560407121000], {
    sats: 0,
    priority: 1,
    eventIo: 1,
    din1: true,
    io17: 157,
    totalOdometer: 22949000,
    io11: 893700218,
    io14: 500686954,
  })
  // The Codec 8 example: IO 21 = 3, 1 = 1, 66 = 0x5DBC.
  assert.deepEqual(byTs[1560407006000], {
    sats: 0,
    priority: 1,
    eventIo: 1,
    gsmSignal: 3,
    din1: true,
    externalVoltage: 23.996,
  })
})

test('a datagram sent again (its ack lost) is answered again and stored once', async () => {
  const imei = '356307042441013'
  const { id } = await p.createDevice('udp tracker 2', { imei })
  const data = avlData('8e', [
    { ts: 1_750_000_000_000, lat: -22.9, lon: -43.2, sats: 7, speed: 30 },
    { ts: 1_750_000_005_000, lat: -22.91, lon: -43.21, sats: 7, speed: 31 },
  ])
  const datagram = udpDatagram(imei, 0x0102, 0x2a, data)
  send(datagram)
  assert.equal((await reply()).toString('hex'), '00050102012a02')
  send(datagram)
  assert.equal((await reply()).toString('hex'), '00050102012a02')
  await drained(p)
  assert.equal((await rows(p, id)).length, 2)
})

test('an unknown IMEI is not answered; a malformed datagram from a registered one is quarantined, not answered', async () => {
  const imei = '356307042441014'
  const { id } = await p.createDevice('udp tracker 3', { imei })
  const refusedBefore = p.app.teltonika!.refusals.refused
  send(udpDatagram('111111111111111', 1, 1, avlData('8', [{ ts: 1_750_000_000_000 }])))
  const broken = udpDatagram(imei, 2, 2, avlData('8', [{ ts: 1_750_000_000_000 }], 2))
  send(broken)
  // Answered datagrams come back in order: the first answer is this one's, so the two before got none.
  send(udpDatagram(imei, 3, 3, avlData('8', [{ ts: 1_750_000_000_000 }])))
  assert.equal((await reply()).toString('hex'), '00050003010301')
  assert.equal(replies.length, 0)
  assert.equal(p.app.teltonika!.refusals.refused, refusedBefore + 1)
  const q = await quarantined(p, id)
  assert.deepEqual(q, [['malformed_packet', false, shown(broken)]])
})
