import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../../helpers/index.js'
import { type AnyPacket, type Device, RawMqtt } from '../../helpers/mqtt-raw.js'
import { MqttSuite, closed, mosquittoPub, publish, series } from './helpers.js'

const telemetry = (d: Device) => `devices/${d.id}/telemetry`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('MQTT gateway limits: payload size, keepalive, connect timeout', () => {
  const mq = new MqttSuite({ IOTCORE_MAX_PAYLOAD_BYTES: '2048', IOTCORE_MQTT_CONNECT_TIMEOUT: '1' })
  const big = (tag: string) => JSON.stringify({ msgId: tag, note: 'x'.repeat(5000) })

  test('MQTT 5: a payload over the limit gets DISCONNECT 0x95 and is quarantined; other connections keep working', async () => {
    const dev = await mq.p.createDevice('big-v5')
    const bystander = await mq.client(5, dev, { clientId: 'bystander' })
    const c = await mq.client(5, dev, { clientId: 'too-big' })
    const disconnect = new Promise<AnyPacket>((resolve) =>
      c.once('disconnect', (pk) => resolve(pk as AnyPacket)),
    )
    c.publish(telemetry(dev), big('b5'), { qos: 1 }, () => {})
    assert.equal((await disconnect).reasonCode, 0x95)
    await closed(c)
    const items = await waitFor(async () => {
      const q = await mq.p.quarantine(dev.id, 'payload_too_large')
      return q.length === 1 ? q : undefined
    })
    assert.equal(items[0].acked, false)
    assert.equal(bystander.connected, true)
    assert.equal(await publish(bystander, telemetry(dev), '{"msgId":"still","ok":1}', 1), undefined)
    await waitFor(async () => (await series(mq.p, dev.id, 'ok')).length === 1)
    assert.deepEqual(await series(mq.p, dev.id, 'note'), [])
  })

  test('MQTT 3.1.1: a payload over the limit closes the connection and is quarantined', async () => {
    const dev = await mq.p.createDevice('big-v3')
    const c = await mq.client(4, dev)
    let acked = false
    c.publish(telemetry(dev), big('b3'), { qos: 1 }, (err) => {
      if (!err) acked = true
    })
    await closed(c)
    assert.equal(acked, false)
    // mosquitto_pub is refused the same way.
    const r = await mosquittoPub([
      ...['-h', '127.0.0.1', '-p', String(mq.p.mqttPort), '-V', 'mqttv311', '-q', '1'],
      ...['-u', dev.id, '-P', dev.token, '-t', telemetry(dev), '-m', big('b3m')],
    ])
    assert.notEqual(r.code, 0)
    await waitFor(async () => {
      const q = await mq.p.quarantine(dev.id, 'payload_too_large')
      return q.length === 2 ? q : undefined
    })
    // A payload at the limit still goes through.
    const fits = JSON.stringify({ msgId: 'fits', note: 'y'.repeat(2000) })
    assert.ok(Buffer.byteLength(fits) <= 2048)
    const ok = await mq.client(4, dev)
    assert.equal(await publish(ok, telemetry(dev), fits, 1), undefined)
    await waitFor(async () => (await series(mq.p, dev.id, 'note')).length === 1)
  })

  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 4 ? '3.1.1' : '5'}: a client silent past 1.5 times its keepalive is disconnected`, async () => {
      const dev = await mq.p.createDevice(`silent-${version}`)
      const c = await RawMqtt.connected(mq.p.mqttPort, version, dev, { keepalive: 1 })
      mq.track(c)
      await c.waitClosed()
      if (version === 5) {
        const pk = await c.next()
        assert.equal(pk.cmd, 'disconnect')
        assert.equal(pk.reasonCode, 0x8d)
      }
    })
  }

  test('a client that pings within its keepalive stays connected', async () => {
    const dev = await mq.p.createDevice('pinger')
    const c = await RawMqtt.connected(mq.p.mqttPort, 4, dev, { keepalive: 2 })
    mq.track(c)
    for (let i = 0; i < 8; i++) {
      c.send({ cmd: 'pingreq' } as AnyPacket)
      assert.equal((await c.next()).cmd, 'pingresp')
      await sleep(500)
    }
    assert.equal(c.closed, false)
  })

  /** Resolves just after the gateway's once-a-second timeout check has run. */
  const afterSweep = async () => {
    const gw = mq.p.app.mqtt!
    const seen = gw.now
    await waitFor(() => gw.now !== seen, 5000, 'a timeout check')
  }

  test('a client pinging within 1.5 times its keepalive stays connected however its pings fall between checks', async () => {
    const dev = await mq.p.createDevice('ping-phase')
    const c = await RawMqtt.connected(mq.p.mqttPort, 4, dev, { keepalive: 1 })
    mq.track(c)
    for (let i = 0; i < 2; i++) {
      // A ping just before a check, the next 1.2 s later (within the 1.5 s allowed), just after the one after.
      await afterSweep()
      await sleep(900)
      c.send({ cmd: 'pingreq' } as AnyPacket)
      assert.equal((await c.next()).cmd, 'pingresp')
      await sleep(1200)
      c.send({ cmd: 'pingreq' } as AnyPacket)
      assert.equal((await c.next()).cmd, 'pingresp')
    }
    assert.equal(c.closed, false)
  })

  test('the connect timeout counts from the accept, so a socket opened just before a check gets its full second', async () => {
    const dev = await mq.p.createDevice('late-accept')
    await afterSweep()
    await sleep(900)
    const c = await RawMqtt.open(mq.p.mqttPort)
    mq.track(c)
    await sleep(300)
    c.send(c.connectPacket(dev))
    const ack = await c.next()
    assert.equal(ack.cmd, 'connack')
    assert.equal(ack.returnCode, 0)
  })

  test('a socket that never sends CONNECT is closed after the connect timeout', async () => {
    const c = await RawMqtt.open(mq.p.mqttPort)
    mq.track(c)
    await c.waitClosed()
    assert.deepEqual(c.received(), [])
  })

  test('a CONNECT trickled a byte at a time is still cut off at the connect timeout', async () => {
    const dev = await mq.p.createDevice('trickle')
    const c = await RawMqtt.open(mq.p.mqttPort)
    mq.track(c)
    const bytes = c.encode(c.connectPacket(dev))
    assert.ok(bytes.length > 40, 'the trickle lasts far longer than the timeout')
    // 2 s rather than 1: with bytes every 250 ms, a timeout that counted from the last byte would never fire.
    const opts = mq.p.app.mqtt!.opts
    opts.connectTimeoutSeconds = 2
    try {
      for (let i = 0; i < bytes.length && !c.closed; i++) {
        c.write(bytes.subarray(i, i + 1))
        await sleep(250)
      }
    } finally {
      opts.connectTimeoutSeconds = 1
    }
    assert.equal(c.closed, true, 'closed before the CONNECT was complete')
    assert.deepEqual(c.received(), [], 'no CONNACK')
  })

  test('a client that connects in time is not cut off by the connect timeout', async () => {
    const dev = await mq.p.createDevice('prompt')
    const c = await mq.client(5, dev, { keepalive: 10 })
    await sleep(2500)
    assert.equal(c.connected, true)
    assert.equal(await publish(c, telemetry(dev), '{"msgId":"p","up":1}', 1), undefined)
  })
})
