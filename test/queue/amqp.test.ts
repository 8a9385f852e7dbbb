import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import pino from 'pino'
import { AmqpQueue } from '../../src/queue/amqp/index.js'
import type { Envelope } from '../../src/queue/types.js'
import { freePort } from '../../src/store/embedded.js'
import { type Platform, freshDatabase, startPlatform, waitFor } from '../helpers/index.js'

const run = promisify(execFile)
const script = new URL('../../../scripts/rabbitmq.sh', import.meta.url).pathname

/** A private RabbitMQ node, started from Debian's package by the project's script. */
async function rabbit(dir: string, port: number): Promise<string> {
  // Past scripts/rabbitmq.sh's own two tries of 90 s each, so the second one gets its full time. The
  // distribution port is picked free too: the default, port + 20000, may be taken or not be a port.
  const dist = String(await freePort())
  return (await run('bash', [script, 'start', dir, String(port), dist], { timeout: 240_000 })).stdout.trim()
}

describe('RabbitMQ queue', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rmq-'))
  let url = ''
  let gateway: Platform
  let ingest: Platform
  before(async () => {
    url = await rabbit(dir, await freePort())
  })
  after(async () => {
    await gateway?.stop()
    await ingest?.stop()
    await run('bash', [script, 'stop', dir]).catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })

  // First: no ingest consumes from the broker yet, so this test's consumer gets what it published.
  test("the gateway's verdict that every reading is valid travels in the message (header v)", async () => {
    const q = new AmqpQueue(url, pino({ level: 'silent' }))
    await q.start()
    const consumer = q.consumer()
    try {
      const env = (id: string, allValid?: boolean): Envelope => ({
        id,
        deviceId: 'd',
        transport: 'http',
        receivedAt: 1_795_420_800_000,
        payload: Buffer.from('{"msgId":"m","v":1}'),
        ...(allValid ? { allValid } : {}),
      })
      await q.enqueueAll([env('judged', true), env('older')])
      const items: Envelope[] = []
      await waitFor(async () => {
        const b = await consumer.next(10, 10)
        if (b) {
          items.push(...b.items)
          await b.ack()
        }
        return items.length === 2
      })
      assert.deepEqual(
        items.map((e) => [e.id, e.allValid]),
        [
          ['judged', true],
          ['older', undefined],
        ],
      )
    } finally {
      await consumer.close()
      await q.stop()
    }
  })

  test('a gateway process and a separate ingest process share the queue; acks follow broker confirms', async () => {
    const databaseUrl = await freshDatabase()
    gateway = await startPlatform({ AMQP_URL: url, IOTCORE_ROLES: 'api,gateway' }, { databaseUrl })
    ingest = await startPlatform(
      { AMQP_URL: url, IOTCORE_ROLES: 'ingest', IOTCORE_HTTP_PORT: 'off', IOTCORE_MQTT_PORT: 'off' },
      { databaseUrl },
    )
    assert.equal(gateway.app.ingest, undefined)
    assert.equal(ingest.app.mqtt, undefined)
    const dev = await gateway.createDevice('amqp-dev')
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, {
      username: dev.id,
      password: dev.token,
      protocolVersion: 5,
    })
    const N = 500
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        client.publishAsync(
          `devices/${dev.id}/telemetry`,
          JSON.stringify({ msgId: `a${i}`, ts: 1732330000000 + i, n: i }),
          { qos: 1 },
        ),
      ),
    )
    await client.endAsync()
    assert.equal(await gateway.metric('iotcore_messages_acked_total'), N)
    await waitFor(
      async () => (await ingest.metric('iotcore_messages_stored_total')) === N,
      60_000,
      'ingest to store all',
    )
    const r = await gateway.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=n&limit=1000&order=asc`)
    assert.deepEqual(
      r.body.n.map((p: { value: number }) => p.value),
      Array.from({ length: N }, (_, i) => i),
    )

    // A backlog waiting when an ingest attaches is delivered at once, before its consume() call returns:
    // every message of it must be taken.
    await ingest.stop()
    const again = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, {
      username: dev.id,
      password: dev.token,
      protocolVersion: 4,
    })
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        again.publishAsync(
          `devices/${dev.id}/telemetry`,
          JSON.stringify({ msgId: `b${i}`, ts: 1732340000000 + i, n: i }),
          {
            qos: 1,
          },
        ),
      ),
    )
    await again.endAsync()
    ingest = await startPlatform(
      { AMQP_URL: url, IOTCORE_ROLES: 'ingest', IOTCORE_HTTP_PORT: 'off', IOTCORE_MQTT_PORT: 'off' },
      { databaseUrl },
    )
    await waitFor(
      async () => (await ingest.metric('iotcore_messages_stored_total')) === N,
      60_000,
      'the backlog stored',
    )
  })

  test("an HTTP request's Idempotency-Key travels through RabbitMQ: a retry without its record stores once", async () => {
    const dev = await gateway.createDevice('amqp-key')
    const post = () =>
      fetch(`${gateway.api}/devices/${dev.id}/telemetry`, {
        method: 'POST',
        headers: { authorization: `Bearer ${dev.token}`, 'idempotency-key': 'amqp-1' },
        body: '[{"k":1},{"k":1}]',
      })
    const ids = async () =>
      (
        await gateway.app.store.pool.query(
          'SELECT msg_id FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ORDER BY 1',
          [dev.id],
        )
      ).rows.map((r) => r.msg_id as string)
    assert.equal((await post()).status, 202)
    const first = await waitFor(async () => ((await ids()).length === 2 ? ids() : undefined))
    assert.ok(first.every((id) => id.startsWith('k:')))
    await gateway.app.store.pool.query('DELETE FROM idempotency_keys WHERE device_id = $1', [dev.id])
    const duplicates = await ingest.metric('iotcore_messages_duplicate_total')
    assert.equal((await post()).status, 202)
    await waitFor(async () => (await ingest.metric('iotcore_messages_duplicate_total')) === duplicates + 2)
    assert.deepEqual(await ids(), first)
  })
})
