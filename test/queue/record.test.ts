import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decodeRecord, encodeRecord } from '../../src/queue/local/record.js'
import type { Envelope } from '../../src/queue/types.js'

const base: Envelope = {
  id: 'x',
  deviceId: 'dev-1',
  transport: 'http',
  receivedAt: 1_795_420_800_123,
  payload: Buffer.from('{"v":1}'),
}

describe('local queue records', () => {
  test('an envelope without an idempotency key is written in format 1, as before keys existed', () => {
    const buf = encodeRecord(base)
    assert.equal(buf[0], 1)
    assert.equal(buf.length, 19 + 'dev-1'.length + '{"v":1}'.length)
    assert.deepEqual(decodeRecord(buf, 'x'), { ...base, topic: undefined, rejected: undefined })
  })

  test('an idempotency key travels with its envelope (format 2), beside topic and refusal', () => {
    const keyed: Envelope = {
      ...base,
      topic: 'devices/dev-1/télémetrie',
      idempotencyKey: 'clé-0001',
      rejected: { reason: 'invalid_ts', detail: 'détail' },
    }
    const buf = encodeRecord(keyed)
    assert.equal(buf[0], 2)
    assert.deepEqual(decodeRecord(buf, 'x'), keyed)
    assert.equal(decodeRecord(encodeRecord({ ...base, idempotencyKey: '' }), 'x').idempotencyKey, '')
  })

  test('a payload judged all valid says so in the high bit of the format byte; entries without it read as before', () => {
    const plain = encodeRecord({ ...base, allValid: true })
    assert.equal(plain[0], 0x81)
    assert.deepEqual(decodeRecord(plain, 'x'), {
      ...base,
      topic: undefined,
      rejected: undefined,
      allValid: true,
    })
    const keyed = encodeRecord({ ...base, idempotencyKey: 'k', allValid: true })
    assert.equal(keyed[0], 0x82)
    assert.equal(decodeRecord(keyed, 'x').idempotencyKey, 'k')
    assert.equal(decodeRecord(keyed, 'x').allValid, true)
    // The bit is the only difference: an entry written before it existed is the same bytes with it clear.
    plain[0] = 1
    assert.ok(plain.equals(encodeRecord(base)))
    assert.equal(decodeRecord(plain, 'x').allValid, undefined)
    plain[0] = 0x83
    assert.throws(() => decodeRecord(plain, 'x'), /unknown format 131/)
  })

  test("the device's own telemetry topic is not written, only flagged (0x40); any other topic is written", () => {
    const own = encodeRecord({ ...base, topic: 'devices/dev-1/telemetry' })
    assert.equal(own[0], 0x41)
    assert.equal(own.length, encodeRecord(base).length)
    assert.equal(decodeRecord(own, 'x').topic, 'devices/dev-1/telemetry')
    for (const topic of [
      'devices/dev-2/telemetry',
      'devices/dev-1/telemetryx',
      'devices/dev-1/commands',
      '',
    ]) {
      const buf = encodeRecord({ ...base, topic })
      assert.equal(buf[0], 1, topic)
      assert.equal(decodeRecord(buf, 'x').topic, topic)
    }
    // Another device's record after the first: the topic is judged per device, not per topic alone.
    const other = encodeRecord({ ...base, deviceId: 'dev-2', topic: 'devices/dev-1/telemetry' })
    assert.equal(other[0], 1)
    assert.equal(decodeRecord(other, 'x').topic, 'devices/dev-1/telemetry')
  })

  test('a refusal queued as invalid_timestamp (position 3) reads back under its new name, invalid_ts', () => {
    // Format 1 as version 0.1.0 wrote it: reason index 3, detail "old", no topic.
    const buf = Buffer.alloc(19 + 1 + 3 + 2)
    buf[0] = 1
    buf.writeDoubleLE(5, 1)
    buf[9] = 1
    buf[10] = 3
    buf.writeUInt16LE(1, 11)
    buf.writeUInt16LE(0xffff, 13)
    buf.writeUInt32LE(3, 15)
    buf.write('dold{}', 19)
    assert.deepEqual(decodeRecord(buf, 'y').rejected, { reason: 'invalid_ts', detail: 'old' })
    assert.equal(decodeRecord(buf, 'y').payload.toString(), '{}')
  })
})
