import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { NewRule, Store } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'
import { device, envelope, flagged, judged, quality, stateOf } from './helpers.js'

const T0 = Date.now() - 3_600_000
const S = 1000

describe('quality: user rules (simple, duration, repeating, stuck) per device and per group', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  let n = 0
  const rule = (deviceId: string, r: Omit<NewRule, 'name' | 'deviceId'>) =>
    store.rules.create({ name: `r${n++}`, deviceId, ...r })
  /** One batch per reading: each rule's clock has to cross batches (and its state PostgreSQL). */
  const send = async (id: string, readings: Array<Record<string, unknown>>) => {
    const q = quality({ deviceCheckViolations: 1000 })
    for (const r of readings) await judged(store, q, [envelope(id, [r], T0 + 3_600_000)])
  }

  test('simple: every reading outside [min, max], or not a number there, is flagged; one without the key is not', async () => {
    const id = await device(store)
    const r = await rule(id, {
      condition: { type: 'range', key: 'coolant', min: 0, max: 100 },
      trigger: { type: 'simple' },
    })
    await send(id, [
      { msgId: '1', ts: T0, coolant: 90 },
      { msgId: '2', ts: T0 + S, coolant: 101 },
      { msgId: '3', ts: T0 + 2 * S, coolant: -1 },
      { msgId: '4', ts: T0 + 3 * S, other: 1 },
      { msgId: '5', ts: T0 + 4 * S, coolant: 'hot' },
    ])
    const f = `rule:${r.name}`
    assert.deepEqual(await flagged(store, id), { '2': f, '3': f, '5': `type_changed,${f}` })
  })

  test('duration: the condition flags only once it has held for its duration, and again after it broke off', async () => {
    const id = await device(store)
    const r = await rule(id, {
      condition: { type: 'range', key: 'coolant', max: 100 },
      trigger: { type: 'duration', seconds: 60 },
    })
    await send(id, [
      { msgId: '00', ts: T0, coolant: 120 },
      { msgId: '30', ts: T0 + 30 * S, coolant: 125 },
      { msgId: '59', ts: T0 + 59 * S, coolant: 125 },
      { msgId: '60', ts: T0 + 60 * S, coolant: 130 },
      { msgId: '90', ts: T0 + 90 * S, coolant: 130 },
      { msgId: '95', ts: T0 + 95 * S, coolant: 90 },
      { msgId: 'a0', ts: T0 + 100 * S, coolant: 120 },
      { msgId: 'a5', ts: T0 + 150 * S, coolant: 120 },
    ])
    const f = `rule:${r.name}`
    assert.deepEqual(await flagged(store, id), { '60': f, '90': f })
    assert.deepEqual((await stateOf(store, id)).rules, { [r.id]: { s: T0 + 100 * S } })
  })

  test('repeating: the condition flags the reading that makes it count times within the window', async () => {
    const id = await device(store)
    const r = await rule(id, {
      condition: { type: 'missing', key: 'lat' },
      trigger: { type: 'repeating', count: 3, seconds: 60 },
    })
    await send(id, [
      { msgId: '00', ts: T0, v: 1 },
      { msgId: '20', ts: T0 + 20 * S, v: 1 },
      { msgId: '30', ts: T0 + 30 * S, lat: 1, lon: 1 },
      { msgId: '40', ts: T0 + 40 * S, v: 1 },
      { msgId: '50', ts: T0 + 50 * S, v: 1 },
      // A minute and more later the earlier hits are out of the window: it takes three new ones.
      { msgId: 'f0', ts: T0 + 150 * S, v: 1 },
      { msgId: 'g0', ts: T0 + 160 * S, v: 1 },
      { msgId: 'h0', ts: T0 + 170 * S, v: 1 },
    ])
    const f = `rule:${r.name}`
    assert.deepEqual(await flagged(store, id), { '40': f, '50': f, h0: f })
  })

  test('stuck: a value unchanged for its seconds is flagged until it moves', async () => {
    const id = await device(store)
    const r = await rule(id, {
      condition: { type: 'stuck', key: 'fuel', seconds: 120 },
      trigger: { type: 'simple' },
    })
    await send(id, [
      { msgId: '000', ts: T0, fuel: 40 },
      { msgId: '060', ts: T0 + 60 * S, fuel: 40 },
      { msgId: '090', ts: T0 + 90 * S, v: 1 },
      { msgId: '120', ts: T0 + 120 * S, fuel: 40 },
      { msgId: '180', ts: T0 + 180 * S, fuel: 40 },
      { msgId: '200', ts: T0 + 200 * S, fuel: 39 },
      { msgId: '300', ts: T0 + 300 * S, fuel: 39 },
    ])
    const f = `rule:${r.name}`
    assert.deepEqual(await flagged(store, id), { '120': f, '180': f })
  })

  test('a rule for a group applies to the devices whose attributes contain its attributes, and to them only', async () => {
    const north = await device(store, { fleet: 'north', model: 'fmb920' })
    const south = await device(store, { fleet: 'south' })
    const bare = await device(store)
    const group = await store.rules.create({
      name: 'north-needs-position',
      attributes: { fleet: 'north' },
      condition: { type: 'missing', key: 'lat' },
      trigger: { type: 'simple' },
    })
    const everyone = await store.rules.create({
      name: 'everyone-rpm',
      condition: { type: 'range', key: 'rpm', max: 6000 },
      trigger: { type: 'simple' },
    })
    assert.deepEqual([group.attributes, group.deviceId, everyone.attributes], [{ fleet: 'north' }, null, {}])
    for (const id of [north, south, bare]) await send(id, [{ msgId: 'm', ts: T0, rpm: 7000 }])
    assert.deepEqual(await flagged(store, north), { m: 'rule:north-needs-position,rule:everyone-rpm' })
    assert.deepEqual(await flagged(store, south), { m: 'rule:everyone-rpm' })
    assert.deepEqual(await flagged(store, bare), { m: 'rule:everyone-rpm' })
    assert.equal(await store.rules.delete(group.id), true)
    assert.equal(await store.rules.delete(everyone.id), true)
    await send(north, [{ msgId: 'n', ts: T0 + S, rpm: 7000 }])
    assert.deepEqual(
      await flagged(store, north),
      { m: 'rule:north-needs-position,rule:everyone-rpm' },
      'gone rules flag nothing new',
    )
  })

  test("a deleted rule's clock leaves the device's state with its next batch", async () => {
    const id = await device(store)
    const r = await rule(id, {
      condition: { type: 'range', key: 't', max: 0 },
      trigger: { type: 'duration', seconds: 600 },
    })
    await send(id, [{ msgId: '1', ts: T0, t: 5 }])
    assert.deepEqual((await stateOf(store, id)).rules, { [r.id]: { s: T0 } })
    await store.rules.delete(r.id)
    await send(id, [{ msgId: '2', ts: T0 + S, t: 5 }])
    assert.equal((await stateOf(store, id)).rules, undefined)
  })
})
