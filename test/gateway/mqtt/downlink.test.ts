import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { command, sendCommand } from '../../helpers/commands.js'
import { type Device, waitFor } from '../../helpers/index.js'
import type { AnyPacket, RawMqtt } from '../../helpers/mqtt-raw.js'
import { filterMatches } from '../../../src/gateway/mqtt/topics.js'
import { MqttSuite, openClient, publish } from './helpers.js'

/** The commands MQTT.js receives, in order: topic, parsed payload and the packet. */
function inbox(client: MqttClient): Array<{ topic: string; body: any; packet: any }> {
  const got: Array<{ topic: string; body: any; packet: any }> = []
  client.on('message', (topic, payload, packet) =>
    got.push({ topic, body: JSON.parse(String(payload)), packet }),
  )
  return got
}

/** Subscribes a raw client to its device's commands topic and reads the SUBACK. */
async function rawSubscribe(raw: RawMqtt, dev: Device, qos: 0 | 1 = 1): Promise<void> {
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `devices/${dev.id}/commands`, qos }] })
  const suback = await raw.next()
  assert.equal(suback.cmd, 'suback')
}

describe('MQTT downlink commands', () => {
  const s = new MqttSuite()
  const ack = (dev: Device) => `devices/${dev.id}/commands/ack`

  test('MQTT 3.1.1: a command from the API reaches the subscribed client at QoS 1; its PUBACK makes it delivered, its answer replied with the result', async () => {
    const dev = await s.p.createDevice('cmd-v3')
    const client = await s.client(4, dev)
    const got = inbox(client)
    await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    const cmd = await sendCommand(s.p, dev.id, { name: 'reboot', params: { delay: 5 } })
    assert.equal(cmd.status, 'queued')
    assert.equal(cmd.deviceId, dev.id)

    await waitFor(() => got.length === 1, 20_000, 'the command')
    assert.equal(got[0].topic, `devices/${dev.id}/commands`)
    assert.deepEqual(got[0].body, { id: cmd.id, name: 'reboot', params: { delay: 5 } })
    assert.equal(got[0].packet.qos, 1)
    assert.equal(got[0].packet.dup, false)
    const delivered = await waitFor(async () => {
      const c = await command(s.p, dev.id, cmd.id)
      return c.status === 'delivered' && c
    })
    assert.equal(delivered.attempts, 1)
    assert.ok(delivered.sentAt && delivered.deliveredAt)

    const err = await publish(
      client,
      ack(dev),
      JSON.stringify({ id: cmd.id, status: 'ok', result: { uptime: 3 } }),
      1,
    )
    assert.equal(err, undefined)
    const replied = await waitFor(async () => {
      const c = await command(s.p, dev.id, cmd.id)
      return c.status === 'replied' && c
    })
    assert.deepEqual(replied.result, { uptime: 3 })
    assert.equal(replied.error, null)
    assert.ok(replied.repliedAt)
    // The answer is no reading: nothing stored, nothing quarantined.
    assert.deepEqual((await s.p.req('GET', `/api/v1/devices/${dev.id}/latest`)).body.values, {})
    assert.deepEqual(await s.p.quarantine(dev.id), [])
    assert.equal(client.connected, true)
  })

  test('MQTT 5: the command carries Response Topic and Correlation Data, and an answer on the Response Topic with only the Correlation Data is taken', async () => {
    const dev = await s.p.createDevice('cmd-v5')
    const { client, connack } = await openClient(s.url, 5, dev)
    s.track(client)
    // No Subscription Identifier would come back with a command: the CONNACK says they are unavailable.
    assert.equal(connack.properties?.subscriptionIdentifiersAvailable, false)
    const got = inbox(client)
    await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    const cmd = await sendCommand(s.p, dev.id, { name: 'locate' })
    await waitFor(() => got.length === 1, 20_000, 'the command')
    assert.deepEqual(got[0].body, { id: cmd.id, name: 'locate', params: {} })
    const props = got[0].packet.properties
    assert.equal(props.responseTopic, ack(dev))
    assert.equal(Buffer.from(props.correlationData).toString(), cmd.id)
    await waitFor(async () => (await command(s.p, dev.id, cmd.id)).status === 'delivered')

    await new Promise<void>((resolve, reject) =>
      client.publish(
        props.responseTopic,
        JSON.stringify({ status: 'ok', result: 'at home' }),
        { qos: 1, properties: { correlationData: props.correlationData } },
        (e) => (e ? reject(e) : resolve()),
      ),
    )
    const replied = await waitFor(async () => {
      const c = await command(s.p, dev.id, cmd.id)
      return c.status === 'replied' && c
    })
    assert.equal(replied.result, 'at home')
  })

  test('an answer with status error fails the command, keeping its result', async () => {
    const dev = await s.p.createDevice('cmd-error')
    const client = await s.client(4, dev)
    const got = inbox(client)
    await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    const cmd = await sendCommand(s.p, dev.id, { name: 'setdigout 1' })
    await waitFor(() => got.length === 1, 20_000, 'the command')
    const body = JSON.stringify({ id: cmd.id, status: 'error', result: { code: 'busy' } })
    assert.equal(await publish(client, ack(dev), body, 1), undefined)
    const failed = await waitFor(async () => {
      const c = await command(s.p, dev.id, cmd.id)
      return c.status === 'failed' && c
    })
    assert.deepEqual(failed.result, { code: 'busy' })
    assert.match(failed.error, /answered error/)
  })

  test('malformed answers are ignored, never stored, and the connection stays: MQTT 5 is told 0x99, 3.1.1 gets its PUBACK', async () => {
    const dev = await s.p.createDevice('cmd-bad-ack')
    const other = await s.p.createDevice('cmd-bad-ack-other')
    const v5 = await s.client(5, dev)
    const v3 = await s.client(4, dev)
    const got = inbox(v3)
    await v3.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    const cmd = await sendCommand(s.p, dev.id, { name: 'ping' })
    await waitFor(() => got.length === 1, 20_000, 'the command')
    await waitFor(async () => (await command(s.p, dev.id, cmd.id)).status === 'delivered')

    const bad = [
      'not json',
      '[1, 2]',
      'null',
      JSON.stringify({ status: 'ok' }),
      JSON.stringify({ id: cmd.id }),
      JSON.stringify({ id: cmd.id, status: 'done' }),
      JSON.stringify({ id: Number(cmd.id), status: 'ok' }),
    ]
    for (const payload of bad) {
      const e5 = await publish(v5, ack(dev), payload, 1)
      assert.equal(e5?.code, 0x99, payload)
      assert.equal(await publish(v3, ack(dev), payload, 1), undefined, payload)
      assert.equal(await publish(v3, ack(dev), payload, 0), undefined, payload)
    }
    // Answers to no command of this device: another device's, and one that does not exist.
    const theirs = await sendCommand(s.p, other.id, { name: 'theirs' })
    for (const id of [theirs.id, '999999999', 'nonsense']) {
      assert.equal(await publish(v3, ack(dev), JSON.stringify({ id, status: 'ok' }), 1), undefined)
    }
    assert.equal(v5.connected && v3.connected, true)

    // A good answer still lands; nothing of the rest did.
    assert.equal(await publish(v3, ack(dev), JSON.stringify({ id: cmd.id, status: 'ok' }), 1), undefined)
    await waitFor(async () => (await command(s.p, dev.id, cmd.id)).status === 'replied')
    assert.equal((await command(s.p, other.id, theirs.id)).status, 'queued')
    assert.equal((await command(s.p, dev.id, cmd.id)).result, null)
    assert.deepEqual((await s.p.req('GET', `/api/v1/devices/${dev.id}/latest`)).body.values, {})
    assert.deepEqual(await s.p.quarantine(dev.id), [])
  })

  test('a device gets its commands only once subscribed to a filter matching its commands topic, at the QoS granted', async () => {
    const dev = await s.p.createDevice('cmd-subscribe')
    const client = await s.client(4, dev)
    const got = inbox(client)
    const waiting = await sendCommand(s.p, dev.id, { name: 'first' })
    // Another device's command, sent through the same dispatcher and NOTIFY after this one, is delivered
    // meanwhile: the unsubscribed device's is not sent.
    const peer = await s.p.createDevice('cmd-subscribe-peer')
    const peerClient = await s.client(4, peer)
    const peerGot = inbox(peerClient)
    await peerClient.subscribeAsync(`devices/${peer.id}/#`, { qos: 1 })
    const peerCmd = await sendCommand(s.p, peer.id, { name: 'peer' })
    await waitFor(async () => (await command(s.p, peer.id, peerCmd.id)).status === 'delivered')
    assert.equal(peerGot.length, 1, 'devices/<id>/# matches the commands topic')
    assert.equal(got.length, 0)
    assert.equal((await command(s.p, dev.id, waiting.id)).status, 'queued')

    // A filter that does not match the commands topic changes nothing; one granted QoS 0 takes them at QoS 0.
    await client.subscribeAsync(`devices/${dev.id}/telemetry`, { qos: 1 })
    await client.subscribeAsync(`devices/${dev.id}/commands/#`, { qos: 0 })
    await waitFor(() => got.length === 1, 20_000, 'the command')
    assert.equal(got[0].body.id, waiting.id)
    assert.equal(got[0].packet.qos, 0)
    // Written at QoS 0 is delivered: no PUBACK will come.
    await waitFor(async () => (await command(s.p, dev.id, waiting.id)).status === 'delivered')
  })

  test("MQTT 5: no more commands in flight than the client's Receive Maximum; each PUBACK lets the next go, with an unused packet identifier", async () => {
    const dev = await s.p.createDevice('cmd-receive-max')
    const ids: string[] = []
    for (const name of ['one', 'two', 'three']) ids.push((await sendCommand(s.p, dev.id, { name })).id)
    const raw = await s.raw(5, dev, { properties: { receiveMaximum: 1 } })
    await rawSubscribe(raw, dev)

    const pids = new Set<number>()
    for (const [i, id] of ids.entries()) {
      const pub = await raw.next()
      assert.equal(pub.cmd, 'publish')
      assert.equal(pub.qos, 1)
      assert.equal(JSON.parse(String(pub.payload)).id, id, `command ${i + 1} in order`)
      assert.notEqual(pub.messageId, 0)
      pids.add(pub.messageId!)
      // The commands were claimed in one go and handed over together: had the next been written, it would
      // come before this PINGRESP.
      raw.send({ cmd: 'pingreq' })
      assert.equal((await raw.next()).cmd, 'pingresp')
      raw.send({ cmd: 'puback', messageId: pub.messageId, reasonCode: 0 })
    }
    assert.equal(pids.size, 3)
    for (const id of ids) await waitFor(async () => (await command(s.p, dev.id, id)).status === 'delivered')
  })

  test("MQTT 5: a PUBACK with an error reason code fails the command; one larger than the client's Maximum Packet Size is not sent and fails", async () => {
    const dev = await s.p.createDevice('cmd-refused')
    const refused = await sendCommand(s.p, dev.id, { name: 'refuse-me' })
    const raw = await s.raw(5, dev)
    await rawSubscribe(raw, dev)
    const pub = await raw.next()
    assert.equal(JSON.parse(String(pub.payload)).id, refused.id)
    raw.send({
      cmd: 'puback',
      messageId: pub.messageId,
      reasonCode: 0x87,
      properties: { reasonString: 'no' },
    })
    const failed = await waitFor(async () => {
      const c = await command(s.p, dev.id, refused.id)
      return c.status === 'failed' && c
    })
    assert.match(failed.error, /0x87 \(no\)/)

    const small = await s.raw(5, dev, { properties: { maximumPacketSize: 128 } })
    await rawSubscribe(small, dev)
    const big = await sendCommand(s.p, dev.id, { name: 'big', params: { blob: 'x'.repeat(500) } })
    const fits = await sendCommand(s.p, dev.id, { name: 'fits' })
    const next = await small.next()
    assert.equal(JSON.parse(String(next.payload)).id, fits.id)
    const tooBig = await waitFor(async () => {
      const c = await command(s.p, dev.id, big.id)
      return c.status === 'failed' && c
    })
    assert.match(tooBig.error, /Maximum Packet Size of 128/)
  })

  test('a connection taking over the client id gets the command its predecessor did not acknowledge; a resumed session gets commands without subscribing again', async () => {
    const dev = await s.p.createDevice('cmd-takeover')
    const cmd = await sendCommand(s.p, dev.id, { name: 'handover' })
    const first = await s.raw(4, dev, { clientId: 'tracker', clean: false })
    await rawSubscribe(first, dev)
    assert.equal(JSON.parse(String((await first.next()).payload)).id, cmd.id)
    const second = await s.raw(4, dev, { clientId: 'tracker', clean: false })
    await first.waitClosed()
    // The session was kept (clean session 0): its subscription takes the command without a SUBSCRIBE.
    const again = await second.next()
    assert.equal(again.cmd, 'publish')
    assert.equal(JSON.parse(String(again.payload)).id, cmd.id)
    second.send({ cmd: 'puback', messageId: again.messageId })
    const c = await waitFor(async () => {
      const x = await command(s.p, dev.id, cmd.id)
      return x.status === 'delivered' && x
    })
    assert.equal(c.attempts, 2)
  })

  test('a command whose connection closes before its PUBACK goes out again on the next connection, and fails after five such sends', async () => {
    const dev = await s.p.createDevice('cmd-lost')
    const cmd = await sendCommand(s.p, dev.id, { name: 'again' })
    for (let attempt = 1; attempt <= 4; attempt++) {
      const raw = await s.raw(4, dev)
      await rawSubscribe(raw, dev)
      const pub = await raw.next()
      assert.equal(JSON.parse(String(pub.payload)).id, cmd.id)
      assert.equal(pub.dup, false)
      raw.destroy()
      await waitFor(async () => {
        const c = await command(s.p, dev.id, cmd.id)
        return c.status === 'queued' && c.attempts === attempt
      })
    }
    const client = await s.client(4, dev)
    const got = inbox(client)
    await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    await waitFor(() => got.length === 1, 20_000, 'the fifth send')
    await waitFor(async () => (await command(s.p, dev.id, cmd.id)).status === 'delivered')

    await client.endAsync()
    const doomed = await sendCommand(s.p, dev.id, { name: 'doomed' })
    for (let attempt = 1; attempt <= 5; attempt++) {
      const raw = await s.raw(4, dev)
      await rawSubscribe(raw, dev)
      const pub: AnyPacket = await raw.next()
      assert.equal(JSON.parse(String(pub.payload)).id, doomed.id)
      raw.destroy()
      await waitFor(async () => (await command(s.p, dev.id, doomed.id)).attempts === attempt)
    }
    const failed = await waitFor(async () => {
      const c = await command(s.p, dev.id, doomed.id)
      return c.status === 'failed' && c
    })
    assert.match(failed.error, /sent 5 times/)
  })
})

describe('MQTT topic filters', () => {
  test('a filter matches a topic level by level: + one level, # the rest and the parent level', () => {
    const topic = 'devices/d1/commands'
    for (const f of [
      'devices/d1/commands',
      'devices/d1/+',
      'devices/+/commands',
      'devices/d1/#',
      'devices/#',
      '#',
      'devices/d1/commands/#',
    ])
      assert.equal(filterMatches(f, topic), true, f)
    for (const f of [
      'devices/d1',
      'devices/d1/commands/ack',
      'devices/d1/+/+',
      'devices/d2/#',
      'devices/d1/command',
      '+/+',
      'devices/d1/commands/+',
    ])
      assert.equal(filterMatches(f, topic), false, f)
  })
})
