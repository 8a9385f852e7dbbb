import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { LocalQueue } from '../../src/queue/local/index.js'
import type { Envelope } from '../../src/queue/types.js'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { openClient } from './mqtt/helpers.js'

describe('gateways: a payload whose readings were all judged valid is queued as such', () => {
  let p: Platform
  let dev: Device
  before(async () => {
    // No ingest: the entries stay in the queue to be looked at.
    p = await startPlatform({ IOTCORE_ROLES: 'api,gateway' })
    dev = await p.createDevice('judged')
  })
  after(() => p.stop())

  test('MQTT and HTTP: all valid is marked (the ingest reads it by its fast path); one bad reading is not', async () => {
    const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, 4, dev)
    const topic = `devices/${dev.id}/telemetry`
    await client.publishAsync(topic, '{"msgId":"m1","v":1}', { qos: 1 })
    await client.publishAsync(topic, '[{"msgId":"m2","v":1},{"msgId":"m3","v":null}]', { qos: 1 })
    await client.endAsync()
    assert.equal((await p.postTelemetry(dev, { msgId: 'h1', v: 1 })).status, 202)
    assert.equal((await p.postTelemetry(dev, [{ msgId: 'h2', v: 1 }, { msgId: 'h3' }])).status, 202)

    const q = new LocalQueue(p.dataDir, 64 * 1024 * 1024, pino({ level: 'silent' }), 'consume')
    await q.start()
    const consumer = q.consumer()
    try {
      const items: Envelope[] = []
      await waitFor(async () => {
        const b = await consumer.next(10, 10)
        if (b) items.push(...b.items)
        return items.length === 4
      })
      assert.deepEqual(
        items.map((e) => [e.transport, e.payload.toString(), e.allValid]),
        [
          ['mqtt', '{"msgId":"m1","v":1}', true],
          ['mqtt', '[{"msgId":"m2","v":1},{"msgId":"m3","v":null}]', undefined],
          ['http', '{"msgId":"h1","v":1}', true],
          ['http', '[{"msgId":"h2","v":1},{"msgId":"h3"}]', undefined],
        ],
      )
    } finally {
      await consumer.close()
      await q.stop()
    }
  })
})
