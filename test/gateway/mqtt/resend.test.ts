import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../../helpers/index.js'
import { type AnyPacket, type Device, RawMqtt } from '../../helpers/mqtt-raw.js'
import { ResendWindow } from '../../../src/gateway/mqtt/resends.js'
import { MqttSuite } from './helpers.js'

/** Readings with neither msgId nor ts: their ids derive from the receive stamp. */
const N = 1000
const PAYLOAD = JSON.stringify(Array.from({ length: N }, (_, i) => ({ i })))

describe('MQTT resends: a DUP PUBLISH of a message already taken is stored once', () => {
  const mq = new MqttSuite()

  async function rows(deviceId: string): Promise<number> {
    const r = await mq.p.app.store.pool.query(
      'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
      [deviceId],
    )
    return r.rows[0].n
  }

  /** Readings the ingest has written or found already written, all devices. */
  const handled = async () =>
    (await mq.p.metric('iotcore_messages_stored_total')) +
    (await mq.p.metric('iotcore_messages_duplicate_total'))

  const publish = (dev: Device, messageId: number, dup: boolean): AnyPacket =>
    ({
      cmd: 'publish',
      topic: `devices/${dev.id}/telemetry`,
      payload: Buffer.from(PAYLOAD),
      qos: 1,
      messageId,
      dup,
      retain: false,
    }) as AnyPacket

  /** Connects to the device's persistent session under `clientId`; returns the client and Session Present. */
  async function resume(version: 4 | 5, dev: Device, clientId: string) {
    const c = mq.track(await RawMqtt.open(mq.p.mqttPort, version))
    const session = version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}
    c.send(c.connectPacket(dev, { clientId, clean: false, ...session }))
    const connack = await c.next()
    assert.equal(connack.cmd, 'connack')
    assert.equal(version === 5 ? connack.reasonCode : connack.returnCode, 0)
    return { c, sessionPresent: connack.sessionPresent as boolean }
  }

  for (const version of [4, 5] as const) {
    const name = version === 5 ? 'MQTT 5' : 'MQTT 3.1.1'
    test(`${name}: a QoS 1 array resent with DUP after its PUBACK was lost, on reconnecting to the persistent session, is stored once`, async () => {
      const dev = await mq.p.createDevice(`dup-${version}`)
      const clientId = `dup-session-${version}`
      const first = await resume(version, dev, clientId)
      const start = await handled()
      first.c.send(publish(dev, 7, false))
      await waitFor(async () => (await handled()) - start >= N, 30_000, 'the first copy stored')
      assert.equal(await rows(dev.id), N)
      // The PUBACK is lost: the client goes away without reading it, and resends on reconnecting.
      first.c.destroy()

      const before = await handled()
      const again = await resume(version, dev, clientId)
      assert.equal(again.sessionPresent, true)
      again.c.send(publish(dev, 7, true))
      const ack = await again.c.next()
      assert.equal(ack.cmd, 'puback')
      assert.equal(ack.messageId, 7)
      await waitFor(async () => (await handled()) - before >= N, 30_000, 'the resend handled')
      assert.equal(await rows(dev.id), N)
      again.c.destroy()
    })
  }

  test('MQTT 3.1.1: a DUP resend on the same connection, its PUBACK not yet read, is stored once; the packet id reused without DUP is a new message', async () => {
    const dev = await mq.p.createDevice('dup-same-connection')
    const c = await mq.raw(4, dev)
    const start = await handled()
    c.send(publish(dev, 9, false))
    await waitFor(async () => (await handled()) - start >= N, 30_000, 'the first copy stored')
    // A client that resends on a timeout of its own, as 3.1.1 allows, before it reads the PUBACK.
    c.send(publish(dev, 9, true))
    for (let i = 0; i < 2; i++) {
      const ack = await c.next()
      assert.deepEqual([ack.cmd, ack.messageId], ['puback', 9])
    }
    await waitFor(async () => (await handled()) - start >= 2 * N, 30_000, 'the resend handled')
    assert.equal(await rows(dev.id), N)

    // Acknowledged, the id is free: the same bytes under it, without DUP, are a new message.
    c.send(publish(dev, 9, false))
    assert.equal((await c.next()).cmd, 'puback')
    await waitFor(async () => (await rows(dev.id)) === 2 * N, 30_000, 'the new message stored')
  })
})

describe('the resend window', () => {
  test('finds the newest publish of a packet id with the same payload length, within its capacity', () => {
    const w = new ResendWindow(100)
    for (let i = 0; i < 150; i++) w.remember(i + 1, 10, 1000 + i)
    assert.equal(w.stampOf(150, 10), 1149)
    assert.equal(w.stampOf(51, 10), 1050, 'the 100th newest is kept')
    assert.equal(w.stampOf(50, 10), undefined, 'older ones were overwritten')
    assert.equal(w.stampOf(150, 11), undefined, 'another length is another message')
    w.remember(150, 12, 5000)
    assert.equal(w.stampOf(150, 10), undefined, 'the newest use of a packet id decides')
    assert.equal(w.stampOf(150, 12), 5000)
  })

  test('holds no more than it was given until it fills', () => {
    const w = new ResendWindow(100)
    w.remember(1, 1, 1)
    assert.equal(w.stampOf(1, 1), 1)
    assert.equal(w.stampOf(2, 1), undefined)
    for (let i = 2; i <= 20; i++) w.remember(i, 1, i)
    for (let i = 1; i <= 20; i++) assert.equal(w.stampOf(i, 1), i, `pid ${i} after growing`)
  })
})
