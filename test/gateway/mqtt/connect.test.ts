import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { type AnyPacket, type Device, RawMqtt } from '../../helpers/mqtt-raw.js'
import { closed, mosquittoPub, openClient, publish, series, until } from './helpers.js'

const telemetry = (d: Device) => `devices/${d.id}/telemetry`

describe('MQTT CONNECT: authentication, will, CONNACK, client ids', () => {
  let p: Platform
  let url: string
  const clients: MqttClient[] = []
  const raws: RawMqtt[] = []

  before(async () => {
    p = await startPlatform()
    url = `mqtt://127.0.0.1:${p.mqttPort}`
  })
  after(async () => {
    for (const c of clients) c.end(true)
    for (const r of raws) r.destroy()
    await p.stop()
  })

  const client = async (version: 4 | 5, dev: Device, opts = {}) => {
    const c = await openClient(url, version, dev, opts)
    clients.push(c.client)
    return c.client
  }

  test('a wrong token or unknown device is refused: CONNACK 0x86 in MQTT 5, return code 4 in 3.1.1', async () => {
    const dev = await p.createDevice('creds')
    const conns0 = await p.metric('iotcore_mqtt_connections')
    for (const bad of [
      { id: dev.id, token: 'iot_not-the-token' },
      { id: 'no-such-device', token: dev.token },
    ]) {
      await assert.rejects(openClient(url, 5, bad), (err: { code?: number }) => err.code === 0x86)
      await assert.rejects(openClient(url, 4, bad), (err: { code?: number }) => err.code === 4)
    }
    // The gateway does not hold on to refused connections.
    await waitFor(async () => (await p.metric('iotcore_mqtt_connections')) === conns0)
  })

  test('a CONNECT without a username is refused (0x86 / 4), as is one without a password', async () => {
    const dev = await p.createDevice('no-user')
    await assert.rejects(openClient(url, 5, {}), (err: { code?: number }) => err.code === 0x86)
    await assert.rejects(openClient(url, 4, {}), (err: { code?: number }) => err.code === 4)
    await assert.rejects(openClient(url, 5, { id: dev.id }), (err: { code?: number }) => err.code === 0x86)
    await assert.rejects(openClient(url, 4, { id: dev.id }), (err: { code?: number }) => err.code === 4)
  })

  test('mosquitto_pub with bad credentials is refused over 3.1.1 and 5', async () => {
    const dev = await p.createDevice('mosq-bad')
    for (const v of ['mqttv311', 'mqttv5']) {
      const r = await mosquittoPub([
        ...['-h', '127.0.0.1', '-p', String(p.mqttPort), '-V', v, '-q', '1'],
        ...['-u', dev.id, '-P', 'iot_wrong', '-t', telemetry(dev), '-m', '{"x":1}'],
      ])
      assert.notEqual(r.code, 0)
      assert.match(r.stderr, /bad user ?name or password/i)
    }
    assert.deepEqual(await series(p, dev.id, 'x'), [])
  })

  test('a will on the telemetry topic is stored when the connection drops without DISCONNECT', async () => {
    const dev = await p.createDevice('will')
    for (const version of [4, 5] as const) {
      const c = await client(version, dev, {
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
    const gone = await until(async () => {
      const s = await series(p, dev.id, 'gone')
      return s.length === 2 ? s : undefined
    })
    assert.deepEqual(gone.map((x) => x.value).sort(), [4, 5])
  })

  test('a normal DISCONNECT discards the will', async () => {
    const dev = await p.createDevice('will-discarded')
    const conns0 = await p.metric('iotcore_mqtt_connections')
    const c = await client(5, dev, {
      will: { topic: telemetry(dev), payload: Buffer.from('{"msgId":"w","gone":1}'), qos: 1, retain: false },
    })
    await c.endAsync()
    await waitFor(async () => (await p.metric('iotcore_mqtt_connections')) === conns0)
    // A reading sent after the disconnect was handled: once it is stored, a will would have been too.
    const later = await client(4, dev)
    assert.equal(await publish(later, telemetry(dev), '{"msgId":"after","alive":1}', 1), undefined)
    await waitFor(async () => (await series(p, dev.id, 'alive')).length === 1)
    assert.deepEqual(await series(p, dev.id, 'gone'), [])
  })

  test('a will on another topic is refused at CONNECT (0x87 / 5)', async () => {
    const dev = await p.createDevice('will-bad')
    const will = {
      topic: 'devices/someone-else/telemetry',
      payload: Buffer.from('{"x":1}'),
      qos: 0 as const,
      retain: false,
    }
    await assert.rejects(openClient(url, 5, dev, { will }), (err: { code?: number }) => err.code === 0x87)
    await assert.rejects(openClient(url, 4, dev, { will }), (err: { code?: number }) => err.code === 5)
  })

  test('the MQTT 5 CONNACK announces receiveMaximum, maximumPacketSize, retainAvailable false, and serverKeepAlive for keepalive 0', async () => {
    const dev = await p.createDevice('connack')
    const cfg = p.app.config
    const zero = await openClient(url, 5, dev, { keepalive: 0, clientId: 'connack-0' })
    clients.push(zero.client)
    const props = zero.connack.properties ?? {}
    assert.equal(props.receiveMaximum, cfg.mqttReceiveMaximum)
    assert.equal(props.maximumPacketSize, p.app.mqtt!.maxPacketSize)
    assert.ok(props.maximumPacketSize! > cfg.maxPayloadBytes)
    assert.equal(props.retainAvailable, false)
    assert.equal(props.serverKeepAlive, cfg.mqttMaxKeepaliveSeconds)
    assert.equal(zero.connack.sessionPresent, false)
    const asked = await openClient(url, 5, dev, { keepalive: 30, clientId: 'connack-30' })
    clients.push(asked.client)
    assert.equal(asked.connack.properties?.serverKeepAlive, undefined, 'an acceptable keepalive is kept')
    // An empty client id gets one assigned.
    const anon = await openClient(url, 5, dev, { clientId: '' })
    clients.push(anon.client)
    assert.match(String(anon.connack.properties?.assignedClientIdentifier), new RegExp(`^${dev.id}-`))
  })

  test('a second connection with the same client id takes the session over (MQTT 5 DISCONNECT 0x8E)', async () => {
    const dev = await p.createDevice('takeover')
    const first = await client(5, dev, { clientId: 'same-id' })
    const disconnect = new Promise<AnyPacket>((resolve) =>
      first.once('disconnect', (pk) => resolve(pk as AnyPacket)),
    )
    const second = await client(5, dev, { clientId: 'same-id' })
    assert.equal((await disconnect).reasonCode, 0x8e)
    await closed(first)
    assert.equal(await publish(second, telemetry(dev), '{"msgId":"t","n":1}', 1), undefined)
  })

  test('a CONNECT split across several TCP segments is still answered', async () => {
    const dev = await p.createDevice('split')
    for (const version of [4, 5] as const) {
      const c = await RawMqtt.open(p.mqttPort, version)
      raws.push(c)
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
    await waitFor(async () => (await series(p, dev.id, 'sp')).length === 2)
  })
})
