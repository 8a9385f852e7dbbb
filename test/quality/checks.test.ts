import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'
import { device, due, envelope, flagged, judged, quality, stateOf } from './helpers.js'

const T0 = Date.now() - 3_600_000
const MIN = 60_000
/** Athens, and the same longitude 9 degrees north: ~1,000 km away. */
const ATHENS = { lat: 37.98, lon: 23.72 }
const FAR = { lat: 46.98, lon: 23.72 }

describe('quality: the built-in checks flag readings as they are stored', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  test('a 0,0 fix and a 1000 km jump in a minute are stored flagged; the fixes around them are not', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 100 })
    const { result, judge } = await judged(store, q, [
      envelope(
        id,
        [
          { msgId: 'a', ts: T0, ...ATHENS },
          { msgId: 'b', ts: T0 + MIN, lat: 0, lon: 0 },
          { msgId: 'c', ts: T0 + 2 * MIN, ...FAR },
          { msgId: 'd', ts: T0 + 3 * MIN, lat: 37.99, lon: 23.72 },
        ],
        T0 + 3 * MIN,
      ),
    ])
    assert.equal(result.stored, 4, 'flagged readings are stored, never dropped')
    assert.equal(judge.flagged, 2)
    assert.deepEqual(await flagged(store, id), { b: 'gps_zero', c: 'gps_jump' })
  })

  test('two fixes in a row that agree away from the last one move the device there: one flag, not a flag forever', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 100 })
    // Carried 1,000 km while off: an hour later it reports from there, where 300 km/h cannot have taken it.
    await judged(store, q, [envelope(id, [{ msgId: 'a', ts: T0, ...ATHENS }], T0)])
    await judged(store, q, [
      envelope(
        id,
        [
          { msgId: 'b', ts: T0 + 60 * MIN, ...FAR },
          { msgId: 'c', ts: T0 + 61 * MIN, lat: FAR.lat + 0.01, lon: FAR.lon },
          { msgId: 'd', ts: T0 + 62 * MIN, lat: FAR.lat + 0.02, lon: FAR.lon },
        ],
        T0 + 62 * MIN,
      ),
    ])
    assert.deepEqual(await flagged(store, id), { b: 'gps_jump' })
    assert.deepEqual((await stateOf(store, id)).pos.slice(0, 3), [FAR.lat + 0.02, FAR.lon, T0 + 62 * MIN])
  })

  test('a ts more than 5 minutes ahead of its receipt is flagged; an old one only under IOTCORE_MAX_READING_AGE', async () => {
    const id = await device(store)
    const now = T0 + 10 * MIN
    const readings = [
      { msgId: 'ahead-4m', ts: now + 4 * MIN, v: 1 },
      { msgId: 'ahead-6m', ts: now + 6 * MIN, v: 1 },
      { msgId: 'two-days-old', ts: now - 2 * 86_400_000, v: 1 },
    ]
    await judged(store, quality(), [envelope(id, readings, now)])
    assert.deepEqual(await flagged(store, id), { 'ahead-6m': 'ts_future' }, 'no age limit by default')
    const other = await device(store)
    await judged(store, quality({ maxReadingAgeSeconds: 86_400 }), [envelope(other, readings, now)])
    assert.deepEqual(await flagged(store, other), { 'ahead-6m': 'ts_future', 'two-days-old': 'ts_old' })
  })

  test('a numeric key turning to text is flagged at the turn, across batches', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 100 })
    const r = (msgId: string, i: number, temp: unknown) => ({ msgId, ts: T0 + i * 1000, temp, label: 'x' })
    await judged(store, q, [envelope(id, [r('1', 1, 20.5), r('2', 2, 21)], T0)])
    await judged(store, q, [
      envelope(id, [r('3', 3, 'ERR'), r('4', 4, 'ERR'), r('5', 5, 22), r('6', 6, true)], T0),
    ])
    assert.deepEqual(await flagged(store, id), { '3': 'type_changed', '6': 'type_changed' })
  })

  test('two ingests judging one device in turn each see what the other wrote, not the state they kept', async () => {
    const id = await device(store)
    const [one, two] = [quality(), quality()]
    const r = (msgId: string, i: number, t: unknown) => ({ msgId, ts: T0 + i * 1000, t })
    await judged(store, one, [envelope(id, [r('1', 1, 5)], T0)])
    await judged(store, two, [envelope(id, [r('2', 2, 'x')], T0)])
    // `one` still keeps t as a number; the state says it turned already: no second turn.
    await judged(store, one, [envelope(id, [r('3', 3, 'y')], T0)])
    await judged(store, two, [envelope(id, [r('4', 4, 6)], T0)])
    await judged(store, one, [envelope(id, [r('5', 5, 'z')], T0)])
    assert.deepEqual(await flagged(store, id), { '2': 'type_changed', '5': 'type_changed' })
  })

  test('a reading the gateway judged valid (the ingest fast path) is judged the same', async () => {
    const id = await device(store)
    await judged(store, quality(), [
      envelope(
        id,
        [
          { msgId: 'a', ts: T0, ...ATHENS },
          { msgId: 'b', ts: T0 + 1000, lat: 0, lon: 0 },
        ],
        T0,
        true,
      ),
    ])
    assert.deepEqual(await flagged(store, id), { b: 'gps_zero' })
  })
})

describe('quality: device integrity', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  test('N flagged readings within the window want a device_check alert; a clean window later clears it', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 3, deviceCheckWindowSeconds: 600 })
    const zero = (msgId: string, at: number) => ({ msgId, ts: at, lat: 0, lon: 0 })
    const ok = (msgId: string, at: number) => ({ msgId, ts: at, ...ATHENS })
    await judged(store, q, [envelope(id, [zero('z1', T0), zero('z2', T0 + 1000)], T0 + 1000)])
    assert.deepEqual(await due(store, id), {}, 'two are below the threshold')
    const { judge } = await judged(store, q, [
      envelope(id, [ok('o1', T0 + 2000), zero('z3', T0 + 3000)], T0 + 3000),
    ])
    assert.equal(judge.alerts, 1)
    const raised = (await due(store, id)).device_check
    assert.equal(raised.active, true)
    assert.equal(raised.severity, 'major')
    assert.equal(raised.delivered, false)
    assert.deepEqual(raised.details, {
      violations: 3,
      threshold: 3,
      windowSeconds: 600,
      lastReading: { msgId: 'z3', ts: T0 + 3000, flags: ['gps_zero'] },
    })
    // Clean readings within the window change nothing; one after a clean window clears it.
    await judged(store, q, [envelope(id, [ok('o2', T0 + 5 * MIN)], T0 + 5 * MIN)])
    assert.equal((await due(store, id)).device_check.version, raised.version)
    await judged(store, q, [envelope(id, [ok('o3', T0 + 11 * MIN)], T0 + 11 * MIN)])
    const cleared = (await due(store, id)).device_check
    assert.equal(cleared.active, false)
    assert.equal(cleared.version, raised.version + 1)
  })

  test('violations spread wider than the window want no alert', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 3, deviceCheckWindowSeconds: 60 })
    for (let i = 0; i < 5; i++)
      await judged(store, q, [
        envelope(id, [{ msgId: `z${i}`, ts: T0 + i * MIN, lat: 0, lon: 0 }], T0 + i * 61_000),
      ])
    assert.equal(Object.keys(await flagged(store, id)).length, 5)
    assert.deepEqual(await due(store, id), {})
  })

  test('duplicates are not judged again: a batch delivered twice flags and counts its readings once', async () => {
    const id = await device(store)
    const q = quality({ deviceCheckViolations: 3 })
    const env = envelope(
      id,
      [
        { msgId: 'a', ts: T0, lat: 0, lon: 0 },
        { msgId: 'b', ts: T0 + 1000, lat: 0, lon: 0 },
      ],
      T0 + 1000,
    )
    await judged(store, q, [env])
    const state = await stateOf(store, id)
    assert.equal(state.viol.length, 2)
    // Redelivered (a crash between commit and queue removal), with a resend of one of them in a new envelope:
    // all three readings are duplicates.
    const again = await judged(store, q, [
      env,
      envelope(id, [{ msgId: 'a', ts: T0, lat: 0, lon: 0 }], T0 + 2000),
    ])
    assert.deepEqual(again.result, { stored: 0, duplicate: 3, quarantined: 0, rejected: 0 })
    assert.equal(again.judge.flagged, 0)
    assert.deepEqual(await stateOf(store, id), state)
    assert.deepEqual(await due(store, id), {}, 'still two violations, not four')
    // A batch of old and new readings (the dedup path) judges only the new one: the third violation.
    const mixed = await judged(store, q, [
      env,
      envelope(id, [{ msgId: 'c', ts: T0 + 3000, lat: 0, lon: 0 }], T0 + 3000),
    ])
    assert.deepEqual(mixed.result, { stored: 1, duplicate: 2, quarantined: 0, rejected: 0 })
    assert.equal(mixed.judge.flagged, 1)
    assert.equal((await stateOf(store, id)).viol.length, 3)
    assert.equal((await due(store, id)).device_check.details.violations, 3)
  })

  test('checks that fail cost no reading: the batch is stored unjudged', async () => {
    const id = await device(store)
    // A rule no API would take: its condition is JSON null, which the checks cannot read.
    await store.pool.query(
      `INSERT INTO quality_rules (name, device_id, condition, trigger) VALUES ('broken', $1, 'null', '{"type":"simple"}')`,
      [id],
    )
    const { result, judge } = await judged(store, quality(), [
      envelope(id, [{ msgId: 'z', ts: T0, lat: 0, lon: 0 }], T0),
    ])
    assert.equal(result.stored, 1)
    assert.equal(judge.flagged, 0)
    assert.deepEqual(await flagged(store, id), {})
    assert.equal(await stateOf(store, id), undefined)
  })
})
