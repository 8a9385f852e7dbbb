import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { type Device, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { nest } from '../../helpers/payloads.js'
import { openClient, publish, series } from './helpers.js'

const telemetry = (d: Device) => `devices/${d.id}/telemetry`

const PAYLOADS = [
  ['100,000 nested arrays', nest(100_000), 'too_deep'],
  ['100,000 nested objects', `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`, 'too_deep'],
  [
    '100,000 levels inside values beside a good reading',
    `[{"msgId":"beside","good":1},{"values":{"x":${nest(100_000, '1')}}}]`,
    'too_deep',
  ],
  ['an array of a million elements', `[${'0,'.repeat(999_999)}0]`, 'too_many_readings'],
] as const

describe('MQTT gateway: deep and huge JSON', () => {
  let p: Platform
  let url: string
  const clients: MqttClient[] = []

  before(async () => {
    // Room for a 100,000-deep object (600 KB) and a million-element array (2 MB).
    p = await startPlatform({ IOTCORE_MAX_PAYLOAD_BYTES: String(4 * 1024 * 1024) })
    url = `mqtt://127.0.0.1:${p.mqttPort}`
  })
  after(async () => {
    for (const c of clients) c.end(true)
    await p.stop()
  })

  const client = async (version: 4 | 5, dev: Device, opts = {}) => {
    const c = await openClient(url, version, dev, opts)
    clients.push(c.client)
    return c.client
  }
  /** The payload's quarantine row, found by its raw bytes: the payload is kept intact. */
  const row = (dev: Device, reason: string, payload: string) =>
    waitFor(
      async () => (await p.quarantine(dev.id, reason)).find((i) => i.payload === payload),
      20_000,
      `the ${reason} payload in quarantine`,
    )
  /** A good reading on the same connection is acked and stored: the gateway and the ingest both still work. */
  const stillServes = async (c: MqttClient, dev: Device, msgId: string) => {
    assert.equal(await publish(c, telemetry(dev), JSON.stringify({ msgId, after: 1 }), 1), undefined)
    await waitFor(async () => (await series(p, dev.id, 'after')).length >= 1)
  }

  for (const [name, payload, reason] of PAYLOADS) {
    test(`MQTT 5: ${name} get PUBACK 0x99 and are quarantined as refused (${reason})`, async () => {
      const dev = await p.createDevice('deep-v5')
      const c = await client(5, dev)
      const err = await publish(c, telemetry(dev), payload, 1)
      assert.equal(err?.code, 0x99)
      assert.equal(c.connected, true)
      const item = await row(dev, reason, payload)
      assert.equal(item.acked, false, 'the device was told it was refused')
      assert.equal(item.transport, 'mqtt')
      assert.equal(item.topic, telemetry(dev))
      await stillServes(c, dev, 'next-v5')
      assert.deepEqual(await series(p, dev.id, 'good'), [], 'nothing of a refused payload is stored')
    })

    test(`MQTT 3.1.1: ${name} are acked, as 3.1.1 has no negative ack, and quarantined (${reason})`, async () => {
      const dev = await p.createDevice('deep-v3')
      const c = await client(4, dev)
      assert.equal(await publish(c, telemetry(dev), payload, 1), undefined)
      assert.equal(c.connected, true)
      const item = await row(dev, reason, payload)
      assert.equal(item.acked, true)
      assert.equal(item.transport, 'mqtt')
      await stillServes(c, dev, 'next-v3')
      assert.deepEqual(await series(p, dev.id, 'good'), [], 'nothing of a quarantined payload is stored')
    })
  }

  test('a 30,000-deep will is quarantined as too_deep when the connection drops', async () => {
    const dev = await p.createDevice('deep-will')
    // A will payload has a 2-byte length: 60,000 bytes, deep enough to overflow any recursive walk.
    const payload = nest(30_000)
    for (const version of [4, 5] as const) {
      const c = await client(version, dev, {
        clientId: `deep-will-${version}`,
        will: { topic: telemetry(dev), payload: Buffer.from(payload), qos: 1, retain: false },
      })
      c.stream.destroy()
    }
    await waitFor(async () => (await p.quarantine(dev.id, 'too_deep')).length === 2)
    for (const item of await p.quarantine(dev.id, 'too_deep')) assert.equal(item.payload, payload)
    await stillServes(await client(5, dev), dev, 'after-will')
  })
})
