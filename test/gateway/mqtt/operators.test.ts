import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { describe, test } from 'node:test'
import type { MqttClient, Packet } from 'mqtt'
import { MAX_BACKLOG } from '../../../src/gateway/mqtt/operators.js'
import { ADMIN_TOKEN, waitFor } from '../../helpers/index.js'
import { type AnyPacket, LIVENESS_MS } from '../../helpers/mqtt-raw.js'
import { MqttSuite, closed, openClient, publish } from './helpers.js'

const raiseScript = new URL('../../helpers/raise-alert.js', import.meta.url).pathname
const admin = { id: '$admin', token: ADMIN_TOKEN }
const ALL = '$iotcore/alerts/#'

interface Got {
  topic: string
  qos: number
  event: { id: string; type: string; createdAt: string; data: { alert: Record<string, any> } }
}

/** Keeps every alert event a client receives, parsed. */
function collect(client: MqttClient): Got[] {
  const got: Got[] = []
  client.on('message', (topic, payload, packet) =>
    got.push({ topic, qos: packet.qos, event: JSON.parse(payload.toString('utf8')) }),
  )
  return got
}

/** Subscribes and resolves with the SUBACK's codes, one per filter in order, refusals included. */
function suback(client: MqttClient, filters: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  return new Promise((resolve) => {
    const on = (packet: Packet) => {
      if (packet.cmd !== 'suback') return
      client.off('packetreceive', on)
      resolve(packet.granted as number[])
    }
    client.on('packetreceive', on)
    // MQTT.js reports a refusal as an error: the codes are what the test looks at.
    client.subscribe(filters, () => {})
  })
}

/** Runs a script in another process, as another platform process would raise an alert. */
function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [file, ...args], (err) => (err ? reject(err) : resolve())),
  )
}

describe('MQTT operators: $iotcore/alerts/<type>', () => {
  const s = new MqttSuite()
  /** Whether the gateway has this operator connection, subscribed. */
  const subscribed = (clientId: string) =>
    [...s.p.app.mqtt!.connections].some((c) => c.clientId === clientId && (c.subs?.size ?? 0) > 0)

  test('3.1.1 and 5 admin clients get an alert opened by another process, acknowledged and cleared, in order', async () => {
    const v3 = await s.client(4, admin)
    const v5 = await s.client(5, admin)
    const got3 = collect(v3)
    const got5 = collect(v5)
    assert.deepEqual(
      (await v3.subscribeAsync(ALL, { qos: 0 })).map((g) => g.qos),
      [0],
    )
    // QoS 2 asked, 1 granted: events go at most at QoS 1.
    assert.deepEqual(
      (await v5.subscribeAsync('$iotcore/alerts/door_open', { qos: 2 })).map((g) => g.qos),
      [1],
    )

    await run(raiseScript, [s.p.databaseUrl, 'op-device', 'door_open'])
    const [opened] = await waitFor(() => got5.length >= 1 && got5)
    const id = opened.event.data.alert.id
    assert.equal((await s.p.req('POST', `/api/v1/alerts/${id}/ack`)).status, 200)
    assert.equal((await s.p.req('POST', `/api/v1/alerts/${id}/clear`)).status, 200)
    await waitFor(() => got3.length >= 3 && got5.length >= 3)

    for (const [got, qos] of [
      [got3, 0],
      [got5, 1],
    ] as const) {
      assert.deepEqual(
        got.map((g) => [g.topic, g.qos, g.event.type, g.event.data.alert.id]),
        [
          ['$iotcore/alerts/door_open', qos, 'alert.opened', id],
          ['$iotcore/alerts/door_open', qos, 'alert.acknowledged', id],
          ['$iotcore/alerts/door_open', qos, 'alert.cleared', id],
        ],
      )
      assert.equal(got[0].event.data.alert.deviceId, 'op-device')
    }
    // The event ids are the outbox's, as webhooks and the SSE stream carry them.
    const ids = got5.map((g) => g.event.id)
    assert.deepEqual(
      got3.map((g) => g.event.id),
      ids,
    )
    const stored = await s.p.app.store.alerts.eventsAfter(0, 100)
    assert.deepEqual(
      stored.filter((e) => e.data.alert && (e.data.alert as any).id === id).map((e) => e.id),
      ids,
    )
    await v3.endAsync()
    await v5.endAsync()
  })

  test('a wrong admin password is refused: CONNACK 0x86 in 5, return code 4 in 3.1.1', async () => {
    for (const [version, code] of [
      [5, 0x86],
      [4, 4],
    ] as const) {
      await assert.rejects(
        openClient(s.url, version, { id: '$admin', token: `${ADMIN_TOKEN}x` }),
        (err: Error & { code?: number }) => err.code === code,
      )
    }
  })

  test('an admin client can subscribe to nothing but $iotcore/alerts/ and publish nothing', async () => {
    const dev = await s.p.createDevice('op-target')
    const v5 = await s.client(5, admin)
    const granted = await suback(v5, {
      [`devices/${dev.id}/commands`]: { qos: 1 },
      '#': { qos: 1 },
      '$iotcore/#': { qos: 1 },
      '$iotcore/alerts/+': { qos: 1 },
    })
    assert.deepEqual(granted, [0x87, 0x87, 0x87, 1])
    // v5 QoS 1: PUBACK 0x87 Not authorized, and the connection stays.
    const err = await publish(v5, `devices/${dev.id}/telemetry`, '{"t":1}', 1)
    assert.equal(err?.code, 0x87)
    assert.ok(v5.connected)
    await v5.endAsync()

    const v3 = await s.client(4, admin)
    assert.deepEqual(await suback(v3, { [`devices/${dev.id}/#`]: { qos: 0 } }), [0x80])
    // v3.1.1 has no negative ack: the connection is closed.
    const gone = closed(v3)
    v3.publish(`devices/${dev.id}/telemetry`, '{"t":1}', { qos: 1 })
    await gone

    // Nothing of it is stored, nor quarantined: it is no device's data.
    assert.deepEqual(await s.p.quarantine(dev.id), [])
    const r = await s.p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=t`)
    assert.deepEqual(r.body.t ?? [], [])
  })

  test('a device client cannot subscribe to $iotcore/alerts/#', async () => {
    const dev = await s.p.createDevice('op-device-sub')
    for (const [version, refused] of [
      [5, 0x87],
      [4, 0x80],
    ] as const) {
      const client = await s.client(version, dev)
      assert.deepEqual(await suback(client, { [ALL]: { qos: 1 } }), [refused])
      await client.endAsync()
    }
  })

  test('mosquitto_sub logged in as $admin receives an alert event', async () => {
    const sub: ChildProcess = spawn('/usr/bin/mosquitto_sub', [
      ...['-h', '127.0.0.1', '-p', String(s.p.mqttPort), '-u', '$admin', '-P', ADMIN_TOKEN],
      ...['-i', 'op-mosquitto', '-t', ALL, '-q', '1', '-C', '1', '-v', '-W', String(LIVENESS_MS / 1000)],
    ])
    let out = ''
    sub.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')))
    const exited = new Promise<number | null>((resolve) => sub.on('exit', (code) => resolve(code)))
    try {
      await waitFor(() => subscribed('$admin/op-mosquitto'))
      await s.p.app.store.alerts.raise({
        subject: { kind: 'device', id: 'op-mosquitto' },
        type: 'battery_low',
        severity: 'minor',
      })
      assert.equal(await exited, 0)
      const [topic, ...json] = out.trim().split(' ')
      assert.equal(topic, '$iotcore/alerts/battery_low')
      const event = JSON.parse(json.join(' '))
      assert.equal(event.type, 'alert.opened')
      assert.equal(event.data.alert.deviceId, 'op-mosquitto')
    } finally {
      sub.kill()
    }
  })

  test('an admin client that does not acknowledge is disconnected with 0x97, and the others still get events', async () => {
    const slow = await s.raw(5, admin, { properties: { receiveMaximum: 5 } })
    slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: ALL, qos: 1 }] } as AnyPacket)
    assert.deepEqual((await slow.next()).granted, [1])
    const fine = await s.client(5, admin)
    const got = collect(fine)
    await fine.subscribeAsync('$iotcore/alerts/slow_test', { qos: 1 })

    const raise = (from: number, n: number) =>
      s.p.app.store.alerts.raise(
        Array.from({ length: n }, (_, i) => ({
          subject: { kind: 'device' as const, id: `op-slow-${from + i}` },
          type: 'slow_test',
          severity: 'warning' as const,
        })),
      )
    // In two steps, so that the client that acknowledges never has the backlog the other one is cut at.
    const half = MAX_BACKLOG / 2
    await raise(0, half)
    await waitFor(() => got.length >= half)
    await raise(half, MAX_BACKLOG + 1 - half)

    await slow.waitClosed()
    const rest: AnyPacket[] = []
    for (let n = slow.received().length - 2; n > 0; n--) rest.push(await slow.next())
    // Only the client's Receive Maximum was sent (and never acknowledged) before it was cut.
    assert.deepEqual(
      rest.map((x) => x.cmd),
      ['publish', 'publish', 'publish', 'publish', 'publish', 'disconnect'],
    )
    assert.equal(rest[5].reasonCode, 0x97)
    await waitFor(() => got.length >= MAX_BACKLOG + 1)
    assert.equal(got.length, MAX_BACKLOG + 1)
    assert.ok(s.p.app.operators!.health().cutSlow >= 1)
    await fine.endAsync()
  })
})
