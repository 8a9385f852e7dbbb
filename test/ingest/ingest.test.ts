import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { build } from '../../src/ingest/index.js'
import type { Envelope } from '../../src/queue/types.js'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'

const T0 = Date.parse('2026-11-23T08:00:00Z')

describe('ingest', () => {
  let p: Platform
  let dev: Device
  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('ingest')
  })
  after(() => p.stop())

  const values = async (d: Device, key: string) =>
    (await p.req('GET', `/api/v1/devices/${d.id}/telemetry?keys=${key}&order=asc`)).body[key]

  test('build() turns a batch of good, bad and deep payloads into the right rows and quarantine rows', async () => {
    const d = await p.createDevice('build')
    const deep = `[{"msgId":"beside-deep","k":9},{"values":{"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}}]`
    const topic = `devices/${d.id}/telemetry`
    const show = (payload: string) => (payload === deep ? 'the deep payload' : payload)
    const env = (id: string, payload: string, extra: Partial<Envelope> = {}): Envelope => ({
      id: `build-${id}`,
      deviceId: d.id,
      transport: 'mqtt',
      topic,
      receivedAt: T0,
      payload: Buffer.from(payload),
      ...extra,
    })
    const items = [
      env('good', `{"msgId":"g1","ts":${T0},"k":1}`),
      env(
        'mixed',
        `[{"msgId":"g2","ts":${T0 + 1},"k":2},{"msgId":"b1","k":{}},{"msgId":"g3","ts":${T0 + 2},"k":3}]`,
      ),
      env('deep', deep),
      env('broken', '{"k":'),
      env('refused', deep, { rejected: { reason: 'too_deep', detail: 'refused at the gateway' } }),
    ]
    const { batch, quarantine } = build(items)
    assert.equal(batch.count, 3)
    assert.deepEqual(
      quarantine.map((q) => [q.sourceId, q.reason, q.acked, show(q.payload.toString()), q.topic]),
      [
        ['build-mixed#1', 'invalid_value', true, '{"msgId":"b1","k":{}}', topic],
        ['build-deep', 'too_deep', true, 'the deep payload', topic],
        ['build-broken', 'malformed_json', true, '{"k":', topic],
        ['build-refused', 'too_deep', false, 'the deep payload', topic],
      ],
    )
    const r = await p.app.store.writeBatch(batch, quarantine)
    assert.equal(r.stored, 3)
    assert.deepEqual(
      (await values(d, 'k')).map((x: { value: number }) => x.value),
      [1, 2, 3],
      'nothing of the deep payload is stored, the good reading beside it included',
    )
    assert.deepEqual(
      (await p.quarantine(d.id)).map((x) => [x.reason, x.acked, show(x.payload)]).sort(),
      [
        ['invalid_value', true, '{"msgId":"b1","k":{}}'],
        ['too_deep', true, 'the deep payload'],
        ['malformed_json', true, '{"k":'],
        ['too_deep', false, 'the deep payload'],
      ].sort(),
    )
  })

  test('a reading sent twice with the same msgId is stored once; without msgId, identical content dedups too', async () => {
    const d = await p.createDevice('dup')
    const dupBefore = await p.metric('iotcore_messages_duplicate_total')
    await p.postTelemetry(d, { msgId: 'same', ts: T0, v: 1 })
    await p.postTelemetry(d, { msgId: 'same', ts: T0, v: 1 })
    await p.postTelemetry(d, { ts: T0 + 5, v: 7 })
    await p.postTelemetry(d, { ts: T0 + 5, v: 7 })
    await waitFor(async () => (await p.metric('iotcore_messages_duplicate_total')) - dupBefore === 2)
    assert.deepEqual(await values(d, 'v'), [
      { ts: T0, value: 1 },
      { ts: T0 + 5, value: 7 },
    ])
  })

  test('a row PostgreSQL refuses is quarantined alone; the rest of its batch is stored', async () => {
    // Validation refuses what PostgreSQL would, so a check constraint stands in for a row the database refuses.
    await p.app.store.pool.query(
      `ALTER TABLE telemetry ADD CONSTRAINT no_poison CHECK (NOT (values ? 'poison'))`,
    )
    try {
      const good1 = '{"msgId":"g1","ts":1732330000000,"z":1}'
      const bad = '{"msgId":"b1","ts":1732330000000,"poison":1}'
      const good2 = '{"msgId":"g2","ts":1732330001000,"z":2}'
      await p.app.queue.enqueueAll(
        [good1, bad, good2].map((body, i) => ({
          id: `test-${i}-${Date.now()}`,
          deviceId: dev.id,
          transport: 'http' as const,
          receivedAt: Date.now(),
          payload: Buffer.from(body),
        })),
      )
      const item = await waitFor(
        async () => (await p.quarantine(dev.id, 'database_rejected')).find((i) => i.payload === bad),
        20_000,
        'the refused row in quarantine',
      )
      assert.match(item.detail, /no_poison/)
      await waitFor(async () => (await values(dev, 'z')).length === 2)
    } finally {
      await p.app.store.pool.query('ALTER TABLE telemetry DROP CONSTRAINT no_poison')
    }
  })
})

describe('ingest: poison messages', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  test('a message that keeps failing in ingest goes to quarantine after 5 tries and stops blocking the queue', async () => {
    const dev = await p.createDevice('poison')
    // Neither a data error nor an outage: an error raised by a trigger stands in for any repeating failure.
    await p.app.store.pool.query(`
      CREATE FUNCTION poison_check() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.values ? 'poison' THEN RAISE EXCEPTION 'poisoned reading'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER poison BEFORE INSERT ON telemetry FOR EACH ROW EXECUTE FUNCTION poison_check();`)
    assert.equal((await p.postTelemetry(dev, { msgId: 'p1', ts: 1732330000000, poison: 1 })).status, 202)
    assert.equal((await p.postTelemetry(dev, { msgId: 'ok1', ts: 1732330001000, fine: 1 })).status, 202)
    const item = await waitFor(
      async () => (await p.quarantine(dev.id, 'ingest_failed'))[0],
      60_000,
      'the poison message in quarantine',
    )
    assert.match(item.detail, /poisoned reading/)
    assert.equal(item.acked, true)
    await waitFor(
      async () =>
        (await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=fine`)).body.fine.length === 1,
    )
    await waitFor(() => p.app.queue.stats().depth === 0)
  })
})
