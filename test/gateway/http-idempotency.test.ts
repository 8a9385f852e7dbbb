import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { type Device, type Platform, startPlatform } from '../helpers/index.js'
import { drained, latest, quarantined, rows } from '../helpers/stored.js'

/** 2026-11-23T08:00:00Z */
const T0 = 1_795_420_800_000

describe('HTTP ingest: Idempotency-Key', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const send = async (d: Device, body: string | Buffer, key?: string, extra: Record<string, string> = {}) => {
    const r = await p.postTelemetry(d, body, key === undefined ? extra : { ...extra, 'idempotency-key': key })
    const text = await r.text()
    return { status: r.status, headers: r.headers, text, body: JSON.parse(text) }
  }
  const received = () => p.metric('iotcore_messages_received_total', 'transport="http"')

  test('a retry with the same key and body answers the first 202 again and queues nothing', async () => {
    const d = await p.createDevice('retry')
    const body = `[{"speed":77},{"speed":77},{"msgId":"m","ts":${T0},"rpm":2},{"bad":[1]}]`
    const before = await received()
    const first = await send(d, body, 'key-1')
    assert.equal(first.status, 202)
    assert.equal(first.headers.get('idempotent-replayed'), null)
    assert.equal(first.body.accepted, 3)
    assert.equal(await received(), before + 4)
    for (let i = 0; i < 3; i++) {
      const again = await send(d, body, 'key-1')
      assert.equal(again.status, 202)
      assert.equal(again.text, first.text, 'the same body, byte for byte')
      assert.equal(again.headers.get('idempotent-replayed'), 'true')
    }
    const gz = await send(d, gzipSync(body), '"key-1"', { 'content-encoding': 'gzip' })
    assert.equal(gz.text, first.text, 'the same body once decoded, the key as a quoted sf-string')
    assert.equal(await received(), before + 4, 'nothing appended for the retries')
    assert.deepEqual(await quarantined(p, d.id), [['invalid_value', true, '{"bad":[1]}']])
    const stored = await rows(p, d.id)
    assert.equal(stored.length, 3)
    assert.equal(stored.filter((r) => r.values.speed === 77).length, 2)
    assert.deepEqual(await latest(p, d.id), {
      speed: { ts: stored.find((r) => r.values.speed)!.ts, value: 77 },
      rpm: { ts: T0, value: 2 },
    })
  })

  test('the same key with another body is 422 IOT_ERR_IDEMPOTENCY_KEY_REUSED, and nothing of it is stored', async () => {
    const d = await p.createDevice('mismatch')
    assert.equal((await send(d, '{"v":1}', 'k')).status, 202)
    const before = await received()
    const r = await send(d, '{"v":2}', 'k')
    assert.equal(r.status, 422)
    assert.equal(r.body.code, 'IOT_ERR_IDEMPOTENCY_KEY_REUSED')
    assert.match(r.body.message, /Idempotency-Key 'k' was used with another body/)
    assert.equal(await received(), before)
    await drained(p)
    assert.deepEqual(
      (await rows(p, d.id)).map((x) => x.values),
      [{ v: 1 }],
    )
  })

  test('keys are per device: two devices may use the same key', async () => {
    const a = await p.createDevice('per-device-a')
    const b = await p.createDevice('per-device-b')
    assert.equal((await send(a, '{"v":1}', 'shared')).status, 202)
    const r = await send(b, '{"v":2}', 'shared')
    assert.equal(r.status, 202)
    assert.equal(r.headers.get('idempotent-replayed'), null)
    await drained(p)
    assert.equal((await rows(p, b.id)).length, 1)
  })

  test('a request while another with the key is answered is 409 with Retry-After; then it gets the answer', async () => {
    const d = await p.createDevice('in-use')
    const body = '{"v":1}'
    // The first attempt, caught between its claim and its answer.
    const hash = createHash('sha256').update(body).digest('base64url')
    assert.equal((await p.app.store.idempotency.claim(d.id, 'busy', hash)).kind, 'claimed')
    const r = await send(d, body, 'busy')
    assert.equal(r.status, 409)
    assert.equal(r.body.code, 'IOT_ERR_IDEMPOTENCY_KEY_IN_USE')
    assert.equal(r.headers.get('retry-after'), '1')
    await p.app.store.idempotency.complete(d.id, 'busy', 202, '{"accepted":1}')
    const later = await send(d, body, 'busy')
    assert.deepEqual([later.status, later.text], [202, '{"accepted":1}'])
    await drained(p)
    assert.deepEqual(await rows(p, d.id), [], 'neither request appended anything')
  })

  test('concurrent requests with one key append once; each is answered 202 (the same) or 409', async () => {
    const d = await p.createDevice('race')
    const before = await received()
    const answers = await Promise.all(Array.from({ length: 8 }, () => send(d, '{"c":1}', 'race')))
    const ok = answers.filter((a) => a.status === 202)
    assert.ok(ok.length >= 1)
    assert.equal(ok.length + answers.filter((a) => a.status === 409).length, answers.length)
    assert.equal(new Set(ok.map((a) => a.text)).size, 1)
    assert.equal(await received(), before + 1, 'appended once')
    await drained(p)
    assert.equal((await rows(p, d.id)).length, 1)
  })

  test('a refused request frees its key: the corrected retry is judged afresh', async () => {
    const d = await p.createDevice('refused')
    const bad = await send(d, '{"ts":"yesterday","v":1}', 'fix')
    assert.equal(bad.status, 400)
    const good = await send(d, `{"ts":${T0},"v":1}`, 'fix')
    assert.equal(good.status, 202)
    assert.equal(good.headers.get('idempotent-replayed'), null)
    await drained(p)
    assert.deepEqual(
      (await rows(p, d.id)).map((r) => [r.ts, r.values]),
      [[T0, { v: 1 }]],
    )
  })

  test('readings without ts nor msgId derive ids from the key: a retry whose record was lost stores once', async () => {
    const d = await p.createDevice('lost')
    const body = '[{"speed":50},{"speed":50},{"heading":90}]'
    assert.equal((await send(d, body, 'lost-key')).status, 202)
    await drained(p)
    // The first answer never arrived, and its record is gone (a restored database, an expired key).
    await p.app.store.pool.query('DELETE FROM idempotency_keys WHERE device_id = $1', [d.id])
    const dup = await p.metric('iotcore_messages_duplicate_total')
    const retry = await send(d, body, 'lost-key')
    assert.equal(retry.status, 202)
    assert.equal(retry.headers.get('idempotent-replayed'), null, 'appended again')
    await drained(p)
    assert.equal(await p.metric('iotcore_messages_duplicate_total'), dup + 3, 'and found to be duplicates')
    const stored = await rows(p, d.id)
    assert.equal(stored.length, 3)
    assert.ok(stored.every((r) => r.msgId.startsWith('k:')))
    // Without a key, the same body sent again is new readings.
    assert.equal((await send(d, body)).status, 202)
    await drained(p)
    assert.equal((await rows(p, d.id)).length, 6)
  })

  test('when the key records cannot be read, the request is accepted unchecked and its readings still store once', async () => {
    const d = await p.createDevice('unchecked')
    await p.app.store.pool.query('ALTER TABLE idempotency_keys RENAME TO idempotency_keys_away')
    try {
      const body = '[{"n":1},{"n":1}]'
      const a = await send(d, body, 'k-unchecked')
      const b = await send(d, body, 'k-unchecked')
      assert.deepEqual([a.status, b.status], [202, 202])
      assert.equal(a.text, b.text)
      await drained(p)
      assert.equal((await rows(p, d.id)).length, 2)
    } finally {
      await p.app.store.pool.query('ALTER TABLE idempotency_keys_away RENAME TO idempotency_keys')
    }
  })

  test('a key that is not 1 to 255 printable ASCII characters is a 400', async () => {
    const d = await p.createDevice('bad-key')
    for (const key of ['x'.repeat(256), '""', 'clé']) {
      const r = await send(d, '{"v":1}', key)
      assert.equal(r.status, 400, key)
      assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
      assert.match(r.body.message, /header 'idempotency-key' must be 1 to 255 printable ASCII characters/)
    }
    assert.equal((await send(d, '{"v":1}', 'x'.repeat(255))).status, 202)
  })
})
