/**
 * Teltonika bad input over real sockets: a bad CRC is not acked, kept and counted, and the connection goes on;
 * garbage framing, a length over the limit and records that disagree with their count close the connection
 * with nothing acked and the bytes quarantined; a sender that never finishes is closed after the timeout; a
 * flood of unknown IMEIs from one address is cut off. Other connections are not disturbed by any of it.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { MAX_DATA_LENGTH } from '../../../src/gateway/teltonika/codec.js'
import { LIMIT } from '../../../src/gateway/refusals.js'
import { type Platform, startPlatform } from '../../helpers/index.js'
import { drained, quarantined, rows } from '../../helpers/stored.js'
import {
  DOCS,
  RawTeltonika,
  ackHex,
  avlData,
  avlPacket,
  frame,
  hex,
  imeiFrame,
  shown,
  tracker,
} from '../../helpers/teltonika.js'

let p: Platform
let port: number

before(async () => {
  // A one-second timeout, so that the slow senders below are closed soon.
  p = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0', IOTCORE_TELTONIKA_TIMEOUT: '1' })
  port = p.app.teltonika!.port
})
after(() => p.stop())

describe('a bad CRC', () => {
  test('is not acked, is quarantined with its bytes and counted, and the connection reads on', async () => {
    const { id, imei } = await tracker(p)
    const rejectedBefore = await p.metric('iotcore_messages_rejected_total', 'reason="bad_crc"')
    const dev = await RawTeltonika.connected(port, imei)
    const bad = hex(DOCS.codec8a)
    bad[bad.length - 1] ^= 0xff
    dev.write(bad)
    // The next packet's ack is the first thing the device gets: nothing answered the bad one.
    dev.write(hex(DOCS.codec8c))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(2))
    assert.equal(dev.rest().length, 0)
    assert.equal(dev.closed, false)
    dev.destroy()
    assert.deepEqual(await quarantined(p, id), [['bad_crc', false, shown(bad)]])
    assert.equal((await rows(p, id)).length, 2)
    assert.equal(await p.metric('iotcore_messages_rejected_total', 'reason="bad_crc"'), rejectedBefore + 1)
  })
})

describe('broken framing closes the connection, acks nothing and quarantines the bytes', () => {
  async function closedWith(bytes: Buffer): Promise<string> {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(bytes)
    await dev.waitClosed()
    assert.equal(dev.rest().length, 0, 'nothing was acked')
    await drained(p)
    assert.equal((await rows(p, id)).length, 0)
    const q = await quarantined(p, id)
    assert.equal(q.length, 1)
    assert.equal(q[0][0], 'malformed_packet')
    assert.equal(q[0][1], false)
    return q[0][2]
  }

  test('garbage: bytes that do not start with the zero preamble', async () => {
    const garbage = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    assert.equal(await closedWith(garbage), shown(garbage))
  })

  test('a Data Field Length over the limit is refused before its body is waited for', async () => {
    const header = Buffer.alloc(8)
    header.writeUInt32BE(MAX_DATA_LENGTH + 1, 4)
    assert.equal(await closedWith(header), shown(header))
  })

  test('Number of Data 1 and 2 that disagree, under a correct CRC', async () => {
    const packet = frame(avlData('8', [{ ts: 1_750_000_000_000 }, { ts: 1_750_000_001_000 }], 3))
    assert.equal(await closedWith(packet), shown(packet))
  })

  test('a record count larger than the records in the packet', async () => {
    const data = avlData('8e', [{ ts: 1_750_000_000_000 }])
    data[1] = 2
    data[data.length - 1] = 2
    const packet = frame(data)
    assert.equal(await closedWith(packet), shown(packet))
  })

  test('an unknown codec', async () => {
    const data = avlData('8', [{ ts: 1_750_000_000_000 }])
    data[0] = 0x09
    const packet = frame(data)
    assert.equal(await closedWith(packet), shown(packet))
  })

  test('a good packet before the garbage in the same read is acked; nothing after it', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(Buffer.concat([hex(DOCS.codec8b), Buffer.from('garbage'), hex(DOCS.codec8c)]))
    await dev.waitClosed()
    assert.equal(dev.rest().toString('hex'), ackHex(1))
    await drained(p)
    assert.equal((await rows(p, id)).length, 1)
  })
})

describe('the handshake', () => {
  test('a handshake that is not one (zero length) is answered 00 and closed', async () => {
    const dev = await RawTeltonika.open(port)
    dev.write(hex(DOCS.codec8a))
    assert.equal((await dev.read(1))[0], 0x00)
    await dev.waitClosed()
  })
})

describe('slow senders are closed after the timeout', () => {
  test('a handshake never completed', async () => {
    const dev = await RawTeltonika.open(port)
    dev.write(imeiFrame('352093086403655').subarray(0, 5))
    await dev.waitClosed()
    assert.equal(dev.rest().length, 0)
  })

  test('a packet never completed; one completed before it is acked', async () => {
    const { imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    const packet = hex(DOCS.codec8a)
    dev.write(Buffer.concat([hex(DOCS.codec8b), packet.subarray(0, packet.length - 3)]))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
    await dev.waitClosed()
    assert.equal(dev.rest().length, 0)
  })

  test('a connection that completed its packets stays open while idle', async () => {
    const { imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(hex(DOCS.codec8b))
    await dev.read(4)
    // Several sweeps of the one-second timeout pass; an idle device (waiting for commands) is not cut.
    await new Promise((r) => setTimeout(r, 2500))
    dev.write(hex(DOCS.codec8b))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
    assert.equal(dev.closed, false)
    dev.destroy()
  })
})

test('a connection of a device that is deleted is cut', async () => {
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  assert.equal((await p.req('DELETE', `/api/v1/devices/${id}`)).status, 204)
  await dev.waitClosed()
})

describe('refusals', () => {
  test('are counted per address; past the limit the address is closed before its handshake is read, others are served', async () => {
    const refusals = p.app.teltonika!.refusals
    const flooder = '127.0.0.2'
    for (let i = 0; i < LIMIT; i++) {
      const { dev, answer } = await RawTeltonika.handshake(port, `00000${i}`, flooder)
      assert.equal(answer, 0x00)
      dev.destroy()
    }
    assert.equal(refusals.count(flooder), LIMIT)
    const { imei } = await tracker(p)
    const cut = await RawTeltonika.open(port, flooder)
    cut.write(imeiFrame(imei))
    await cut.waitClosed()
    assert.equal(cut.rest().length, 0, 'no answer, not even 01 for a registered IMEI')
    assert.ok(refusals.limited >= 1)
    const health = await (await fetch(`${p.base}/readyz`)).json()
    assert.ok(health.components.teltonika.refused >= LIMIT)
    assert.ok(health.components.teltonika.limited >= 1)
    // Another address is not cut off by the flood.
    const fresh = await RawTeltonika.connected(port, imei)
    fresh.write(avlPacket('8e', [{ ts: 1_750_000_000_000, lat: 1, lon: 2, sats: 4 }]))
    assert.equal((await fresh.read(4)).toString('hex'), ackHex(1))
    fresh.destroy()
  })
})
