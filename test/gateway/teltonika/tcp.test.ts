/**
 * Teltonika over TCP against a started platform, with real sockets: the handshake, the documentation's packets
 * acked with their record counts and stored with their values, packets split across reads and several in one,
 * a resend after a lost ack stored once, the device's pings, Codec 13 messages, and the listener's health.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { drained, latest, rows } from '../../helpers/stored.js'
import {
  DOCS,
  RawTeltonika,
  ackHex,
  avlPacket,
  hex,
  imeiFrame,
  messagePacket,
  tracker,
} from '../../helpers/teltonika.js'

let p: Platform
let port: number

before(async () => {
  p = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0' })
  port = p.app.teltonika!.port
})
after(() => p.stop())

describe('the IMEI handshake', () => {
  test('a registered IMEI is answered 01 and the connection stays open', async () => {
    const { imei } = await tracker(p)
    const { dev, answer } = await RawTeltonika.handshake(port, imei)
    assert.equal(answer, 0x01)
    assert.equal(dev.closed, false)
    dev.destroy()
  })

  test('an unknown IMEI is answered 00 and closed', async () => {
    const { dev, answer } = await RawTeltonika.handshake(port, '999999999999999')
    assert.equal(answer, 0x00)
    await dev.waitClosed()
  })
})

describe("the documentation's packets", () => {
  for (const [name, h, records] of [
    ['Codec 8 (1st example)', DOCS.codec8a, 1],
    ['Codec 8 (3rd example, two records)', DOCS.codec8c, 2],
    ['Codec 8 Extended', DOCS.codec8e, 1],
    ['Codec 16', DOCS.codec16, 2],
  ] as const) {
    test(`${name}: acked with ${records} in 4 bytes after the append, stored with its values`, async () => {
      const { id, imei } = await tracker(p)
      const dev = await RawTeltonika.connected(port, imei)
      dev.write(hex(h))
      assert.equal((await dev.read(4)).toString('hex'), ackHex(records))
      dev.destroy()
      const stored = await waitFor(async () => {
        const r = await rows(p, id)
        return r.length === records && r
      })
      for (const r of stored) assert.equal(r.values.priority !== undefined, true)
    })
  }

  test('Codec 8 (1st example): the values read back through the API', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(hex(DOCS.codec8a))
    await dev.read(4)
    dev.destroy()
    const values = await waitFor(async () => {
      const l = await latest(p, id)
      return l.externalVoltage && l
    })
    const ts = Date.UTC(2019, 5, 10, 10, 4, 46)
    assert.deepEqual(Object.fromEntries(Object.entries(values).map(([k, v]) => [k, [v.ts, v.value]])), {
      sats: [ts, 0],
      priority: [ts, 1],
      eventIo: [ts, 1],
      gsmSignal: [ts, 3],
      din1: [ts, true],
      externalVoltage: [ts, 24.079],
      gsmOperator: [ts, 24602],
      iButton: [ts, '0000000000000000'],
    })
    const r = await p.req('GET', `/api/v1/devices/${id}/telemetry?keys=externalVoltage&from=0`)
    assert.deepEqual(r.body, { externalVoltage: [{ ts, value: 24.079 }] })
  })
})

describe('reads and packets', () => {
  test('a packet split across many TCP reads is acked once whole', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    await dev.trickle(hex(DOCS.codec8c), 7)
    assert.equal((await dev.read(4)).toString('hex'), ackHex(2))
    dev.destroy()
    await waitFor(async () => (await rows(p, id)).length === 2)
  })

  test('the handshake and two packets in one write: 01, then an ack per packet in order', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.open(port)
    const one = avlPacket('8e', [{ ts: 1_750_000_000_000, lat: 10, lon: 20, sats: 5 }])
    const three = avlPacket('8e', [
      { ts: 1_750_000_001_000, sats: 5, lat: 10, lon: 20 },
      { ts: 1_750_000_002_000, sats: 5, lat: 10, lon: 20 },
      { ts: 1_750_000_003_000, sats: 5, lat: 10, lon: 20 },
    ])
    dev.write(Buffer.concat([imeiFrame(imei), one, three]))
    assert.equal((await dev.read(9)).toString('hex'), `01${ackHex(1)}${ackHex(3)}`)
    dev.destroy()
    await waitFor(async () => (await rows(p, id)).length === 4)
  })

  test('a packet resent after its ack was lost is stored once', async () => {
    const { id, imei } = await tracker(p)
    const packet = avlPacket('8', [
      { ts: 1_750_000_000_000, lat: 54.6872, lon: 25.2797, sats: 11, speed: 42, io: [[239, 1, 1]] },
      { ts: 1_750_000_010_000, lat: 54.6873, lon: 25.2798, sats: 11, speed: 44, io: [[239, 1, 1]] },
    ])
    const first = await RawTeltonika.connected(port, imei)
    first.write(packet)
    await first.read(4)
    // The device did not get the ack (its link dropped): it connects again and sends the same packet.
    first.destroy()
    const again = await RawTeltonika.connected(port, imei)
    again.write(packet)
    assert.equal((await again.read(4)).toString('hex'), ackHex(2))
    again.destroy()
    await drained(p)
    const stored = await rows(p, id)
    assert.equal(stored.length, 2)
    assert.deepEqual(stored[0].values, {
      lat: 54.6872,
      lon: 25.2797,
      alt: 0,
      heading: 0,
      speed: 42,
      sats: 11,
      priority: 0,
      eventIo: 0,
      ignition: true,
    })
    assert.ok((await p.metric('iotcore_messages_duplicate_total')) >= 2)
  })

  test("the device's ping byte (0xFF) between packets is skipped", async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(Buffer.from([0xff]))
    dev.write(Buffer.concat([Buffer.from([0xff]), hex(DOCS.codec8b), Buffer.from([0xff, 0xff])]))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
    dev.write(hex(DOCS.codec8a))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
    dev.destroy()
    await waitFor(async () => (await rows(p, id)).length === 2)
  })

  test('a Codec 13 message is stored as a reading of its text at its timestamp', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(messagePacket(13, 'GTSL|driver 7|login', 1_750_000_000))
    dev.write(hex(DOCS.codec13))
    // Codec 13 has no ack: a packet after them shows they were read.
    dev.write(hex(DOCS.codec8b))
    await dev.read(4)
    dev.destroy()
    const stored = await waitFor(async () => {
      const r = await rows(p, id)
      return r.length === 3 && r
    })
    const responses = stored.filter((r) => 'response' in r.values).map((r) => [r.ts, r.values])
    assert.deepEqual(
      responses.sort((a, b) => (a[0] as number) - (b[0] as number)),
      [
        [0x0a81c320 * 1000, { response: 'getinfo' }],
        [1_750_000_000_000, { response: 'GTSL|driver 7|login' }],
      ],
    )
  })
})

describe('counters and health', () => {
  test('received and acked count the records with transport teltonika', async () => {
    const before = await p.metric('iotcore_messages_acked_total', 'transport="teltonika"')
    const { imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    dev.write(hex(DOCS.codec16))
    await dev.read(4)
    dev.destroy()
    await waitFor(
      async () => (await p.metric('iotcore_messages_acked_total', 'transport="teltonika"')) === before + 2,
    )
    assert.ok((await p.metric('iotcore_messages_received_total', 'transport="teltonika"')) >= before + 2)
  })

  test('/readyz reports the listener with its connections', async () => {
    const r = await fetch(`${p.base}/readyz`)
    const body = (await r.json()) as Record<string, any>
    const t = body.components.teltonika
    assert.equal(t.ok, true)
    assert.equal(typeof t.connections, 'number')
    assert.equal(p.app.teltonika!.udpPort, port)
  })
})
