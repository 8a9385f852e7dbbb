import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../../helpers/index.js'
import { type AnyPacket, type Device, RawMqtt } from '../../helpers/mqtt-raw.js'
import { MqttSuite, closed, mosquittoPub, openClient, publish, series } from './helpers.js'

const telemetry = (d: Device) => `devices/${d.id}/telemetry`

interface ConnectFields {
  clientId: Buffer
  username?: Buffer
  password?: Buffer
  will?: { topic: Buffer; payload: Buffer }
  /** bytes after the last field */
  trailing?: Buffer
}

/** A CONNECT built on its bytes (clean session, keepalive 60), so a field can hold anything. */
function connectBytes(version: 4 | 5, f: ConnectFields): Buffer {
  const field = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
  const noProperties = version === 5 ? [Buffer.from([0])] : []
  const flags = 0x02 | (f.will ? 0x04 : 0) | (f.password ? 0x40 : 0) | (f.username ? 0x80 : 0)
  const body = Buffer.concat([
    field(Buffer.from('MQTT')),
    Buffer.from([version, flags, 0, 60]),
    ...noProperties,
    field(f.clientId),
    ...(f.will ? [...noProperties, field(f.will.topic), field(f.will.payload)] : []),
    ...(f.username ? [field(f.username)] : []),
    ...(f.password ? [field(f.password)] : []),
    f.trailing ?? Buffer.alloc(0),
  ])
  assert.ok(body.length < 128, 'a one-byte Remaining Length')
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

/** Invalid UTF-8 [MQTT-1.5.4-1/-2]: a stray continuation byte, a surrogate (U+D800), and U+0000. */
const ILL_FORMED = [
  Buffer.from([0x41, 0xff, 0x42]),
  Buffer.from([0xed, 0xa0, 0x80]),
  Buffer.from([0x41, 0x00]),
]

describe('MQTT CONNECT: authentication, will, CONNACK, client ids', () => {
  const mq = new MqttSuite()

  test('a wrong token or unknown device is refused: CONNACK 0x86 in MQTT 5, return code 4 in 3.1.1', async () => {
    const dev = await mq.p.createDevice('creds')
    const conns0 = await mq.p.metric('iotcore_mqtt_connections')
    for (const bad of [
      { id: dev.id, token: 'iot_not-the-token' },
      { id: 'no-such-device', token: dev.token },
    ]) {
      await assert.rejects(openClient(mq.url, 5, bad), (err: { code?: number }) => err.code === 0x86)
      await assert.rejects(openClient(mq.url, 4, bad), (err: { code?: number }) => err.code === 4)
    }
    // The gateway does not hold on to refused connections.
    await waitFor(async () => (await mq.p.metric('iotcore_mqtt_connections')) === conns0)
  })

  test('a CONNECT without a username is refused (0x86 / 4), as is one without a password', async () => {
    const dev = await mq.p.createDevice('no-user')
    await assert.rejects(openClient(mq.url, 5, {}), (err: { code?: number }) => err.code === 0x86)
    await assert.rejects(openClient(mq.url, 4, {}), (err: { code?: number }) => err.code === 4)
    await assert.rejects(openClient(mq.url, 5, { id: dev.id }), (err: { code?: number }) => err.code === 0x86)
    await assert.rejects(openClient(mq.url, 4, { id: dev.id }), (err: { code?: number }) => err.code === 4)
  })

  test('mosquitto_pub with bad credentials is refused over 3.1.1 and 5', async () => {
    const dev = await mq.p.createDevice('mosq-bad')
    for (const v of ['mqttv311', 'mqttv5']) {
      const r = await mosquittoPub([
        ...['-h', '127.0.0.1', '-p', String(mq.p.mqttPort), '-V', v, '-q', '1'],
        ...['-u', dev.id, '-P', 'iot_wrong', '-t', telemetry(dev), '-m', '{"x":1}'],
      ])
      assert.notEqual(r.code, 0)
      assert.match(r.stderr, /bad user ?name or password/i)
    }
    assert.deepEqual(await series(mq.p, dev.id, 'x'), [])
  })

  test('a will on the telemetry topic is stored when the connection drops without DISCONNECT', async () => {
    const dev = await mq.p.createDevice('will')
    for (const version of [4, 5] as const) {
      const c = await mq.client(version, dev, {
        clientId: `will-${version}`,
        will: {
          topic: telemetry(dev),
          payload: Buffer.from(`{"msgId":"will-${version}","gone":${version}}`),
          qos: 1,
          retain: false,
        },
      })
      c.stream.destroy()
    }
    const gone = await waitFor(async () => {
      const s = await series(mq.p, dev.id, 'gone')
      return s.length === 2 ? s : undefined
    })
    assert.deepEqual(gone.map((x) => x.value).sort(), [4, 5])
  })

  test('a normal DISCONNECT discards the will', async () => {
    const dev = await mq.p.createDevice('will-discarded')
    const conns0 = await mq.p.metric('iotcore_mqtt_connections')
    const c = await mq.client(5, dev, {
      will: { topic: telemetry(dev), payload: Buffer.from('{"msgId":"w","gone":1}'), qos: 1, retain: false },
    })
    await c.endAsync()
    await waitFor(async () => (await mq.p.metric('iotcore_mqtt_connections')) === conns0)
    // A reading sent after the disconnect was handled: once it is stored, a will would have been too.
    const later = await mq.client(4, dev)
    assert.equal(await publish(later, telemetry(dev), '{"msgId":"after","alive":1}', 1), undefined)
    await waitFor(async () => (await series(mq.p, dev.id, 'alive')).length === 1)
    assert.deepEqual(await series(mq.p, dev.id, 'gone'), [])
  })

  test('a will on another topic is refused at CONNECT (0x87 / 5)', async () => {
    const dev = await mq.p.createDevice('will-bad')
    const will = {
      topic: 'devices/someone-else/telemetry',
      payload: Buffer.from('{"x":1}'),
      qos: 0 as const,
      retain: false,
    }
    await assert.rejects(openClient(mq.url, 5, dev, { will }), (err: { code?: number }) => err.code === 0x87)
    await assert.rejects(openClient(mq.url, 4, dev, { will }), (err: { code?: number }) => err.code === 5)
  })

  test('the MQTT 5 CONNACK announces receiveMaximum, maximumPacketSize, retainAvailable false, and serverKeepAlive for keepalive 0', async () => {
    const dev = await mq.p.createDevice('connack')
    const cfg = mq.p.app.config
    const zero = await openClient(mq.url, 5, dev, { keepalive: 0, clientId: 'connack-0' })
    mq.track(zero.client)
    const props = zero.connack.properties ?? {}
    assert.equal(props.receiveMaximum, cfg.mqttReceiveMaximum)
    assert.equal(props.maximumPacketSize, mq.p.app.mqtt!.maxPacketSize)
    assert.ok(props.maximumPacketSize! > cfg.maxPayloadBytes)
    assert.equal(props.retainAvailable, false)
    assert.equal(props.serverKeepAlive, cfg.mqttMaxKeepaliveSeconds)
    assert.equal(zero.connack.sessionPresent, false)
    const asked = await openClient(mq.url, 5, dev, { keepalive: 30, clientId: 'connack-30' })
    mq.track(asked.client)
    assert.equal(asked.connack.properties?.serverKeepAlive, undefined, 'an acceptable keepalive is kept')
    // An empty client id gets one assigned.
    const anon = await openClient(mq.url, 5, dev, { clientId: '' })
    mq.track(anon.client)
    assert.match(String(anon.connack.properties?.assignedClientIdentifier), new RegExp(`^${dev.id}-`))
  })

  test('a second connection with the same client id takes the session over (MQTT 5 DISCONNECT 0x8E)', async () => {
    const dev = await mq.p.createDevice('takeover')
    const first = await mq.client(5, dev, { clientId: 'same-id' })
    const disconnect = new Promise<AnyPacket>((resolve) =>
      first.once('disconnect', (pk) => resolve(pk as AnyPacket)),
    )
    const second = await mq.client(5, dev, { clientId: 'same-id' })
    assert.equal((await disconnect).reasonCode, 0x8e)
    await closed(first)
    assert.equal(await publish(second, telemetry(dev), '{"msgId":"t","n":1}', 1), undefined)
  })

  test('a CONNECT split across several TCP segments is still answered', async () => {
    const dev = await mq.p.createDevice('split')
    for (const version of [4, 5] as const) {
      const c = await RawMqtt.open(mq.p.mqttPort, version)
      mq.track(c)
      const bytes = c.encode(c.connectPacket(dev))
      c.write(bytes.subarray(0, 1))
      await new Promise((r) => setTimeout(r, 50))
      c.write(bytes.subarray(1, 12))
      await new Promise((r) => setTimeout(r, 50))
      c.write(bytes.subarray(12))
      const ack = await c.next()
      assert.equal(ack.cmd, 'connack')
      assert.equal(version === 5 ? ack.reasonCode : ack.returnCode, 0)
      // A PUBLISH split the same way, with the ping that follows it in the same segment.
      const pub = c.encode({
        cmd: 'publish',
        topic: telemetry(dev),
        qos: 1,
        messageId: 1,
        payload: `{"sp":${version}}`,
      } as AnyPacket)
      c.write(pub.subarray(0, 5))
      await new Promise((r) => setTimeout(r, 50))
      c.write(Buffer.concat([pub.subarray(5), c.encode({ cmd: 'pingreq' } as AnyPacket)]))
      const got = [await c.next(), await c.next()].map((x) => x.cmd).sort()
      assert.deepEqual(got, ['puback', 'pingresp'].sort())
    }
    await waitFor(async () => (await series(mq.p, dev.id, 'sp')).length === 2)
  })

  /**
   * Sends the CONNECT bytes and waits for the close. MQTT 5 must get a CONNACK with `rc5` first; 3.1.1 the return
   * code `rc3`, or no packet at all where `rc3` is undefined.
   */
  const refusedOnBytes = async (version: 4 | 5, bytes: Buffer, rc5: number, rc3: number | undefined) => {
    const c = await RawMqtt.open(mq.p.mqttPort, version)
    mq.track(c)
    c.write(bytes)
    await c.waitClosed()
    const got = c.received().map((pk) => pk.toString('hex'))
    if (version === 5) assert.equal(got[0]?.slice(0, 2), '20', `a CONNACK, got ${got}`)
    const answer = version === 5 ? [rc5] : rc3 === undefined ? [] : [rc3]
    assert.deepEqual(
      got.map((hex) => Number.parseInt(hex.slice(6, 8), 16)),
      answer,
      `CONNECT ${bytes.toString('hex')} answered ${got}`,
    )
  }

  for (const version of [4, 5] as const) {
    const name = version === 4 ? '3.1.1' : '5'
    test(`MQTT ${name}: invalid UTF-8 in the client id or username is refused on its bytes (${version === 5 ? 'CONNACK 0x81' : 'closed without CONNACK'}), never taken`, async () => {
      const dev = await mq.p.createDevice(`utf8-v${version}`)
      const creds = { username: Buffer.from(dev.id), password: Buffer.from(dev.token) }
      for (const bad of ILL_FORMED) {
        // With the device's own credentials: only the client id is at fault (decoded, it would read U+FFFD).
        await refusedOnBytes(version, connectBytes(version, { clientId: bad, ...creds }), 0x81, undefined)
        // The username: ill-formed is malformed, not a bad username (0x86 / 4).
        const username = Buffer.concat([Buffer.from(dev.id), bad])
        const bytes = connectBytes(version, { ...creds, clientId: Buffer.from('c'), username })
        await refusedOnBytes(version, bytes, 0x81, undefined)
      }
      // The listener still serves that device.
      mq.track(await RawMqtt.connected(mq.p.mqttPort, version, dev))
    })

    test(`MQTT ${name}: control characters in the client id are refused (${version === 5 ? 'CONNACK 0x85' : 'CONNACK 2, identifier rejected'})`, async () => {
      const dev = await mq.p.createDevice(`ctl-v${version}`)
      const creds = { username: Buffer.from(dev.id), password: Buffer.from(dev.token) }
      for (const id of ['car\u0001', 'car\u007f', 'car\u0085', 'car\ufffe']) {
        await refusedOnBytes(version, connectBytes(version, { clientId: Buffer.from(id), ...creds }), 0x85, 2)
      }
    })

    test(`MQTT ${name}: a CONNECT with bytes after its last field, or a will topic of invalid UTF-8, is malformed`, async () => {
      const dev = await mq.p.createDevice(`trail-v${version}`)
      const creds = {
        clientId: Buffer.from('c'),
        username: Buffer.from(dev.id),
        password: Buffer.from(dev.token),
      }
      const trailing = connectBytes(version, { ...creds, trailing: Buffer.from([0x00, 0x01, 0x41]) })
      await refusedOnBytes(version, trailing, 0x81, undefined)
      const topic = Buffer.concat([Buffer.from(telemetry(dev)), ILL_FORMED[1]])
      const will = connectBytes(version, { ...creds, will: { topic, payload: Buffer.from('{"gone":1}') } })
      await refusedOnBytes(version, will, 0x81, undefined)
    })
  }
})
