import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Store, Subject } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'

const truck: Subject = { kind: 'device', id: 'truck-7' }

describe('store: alerts', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  /** The outbox's events of one alert, oldest first, as type names. */
  const eventsOf = async (alertId: string) =>
    (await store.alerts.eventsAfter(0, 1000))
      .filter((e) => (e.data.alert as { id: string } | undefined)?.id === alertId)
      .map((e) => e.type)

  test('lifecycle: raise opens, a raise again bumps, ack, clear, and a raise after the clear opens a new alert', async () => {
    const [opened] = await store.alerts.raise([
      { subject: truck, type: 'gps_jump', severity: 'minor', details: { km: 40 } },
    ])
    assert.equal(opened.opened, true)
    assert.equal(opened.status, 'active')
    assert.equal(opened.acknowledged, false)
    assert.equal(opened.count, 1)
    assert.equal(opened.deviceId, 'truck-7')
    assert.equal(opened.service, null)

    const [bumped] = await store.alerts.raise([
      { subject: truck, type: 'gps_jump', severity: 'major', details: { km: 90 } },
    ])
    assert.equal(bumped.opened, false)
    assert.equal(bumped.id, opened.id, 'the open alert is bumped, not a second one opened')
    assert.equal(bumped.count, 2)
    assert.equal(bumped.severity, 'major')
    assert.deepEqual(bumped.details, { km: 90 })
    assert.equal(bumped.firstSeen, opened.firstSeen)
    assert.ok(bumped.lastSeen >= opened.lastSeen)

    const acked = await store.alerts.acknowledge(opened.id)
    assert.equal(acked?.acknowledged, true)
    assert.equal(acked?.status, 'active', 'acknowledging does not clear')
    const ackedAgain = await store.alerts.acknowledge(opened.id)
    assert.equal(ackedAgain?.acknowledgedAt, acked?.acknowledgedAt, 'a second ack changes nothing')

    const cleared = await store.alerts.clearById(opened.id)
    assert.equal(cleared?.status, 'cleared')
    assert.notEqual(cleared?.clearedAt, null)
    assert.equal(cleared?.acknowledged, true)

    const [again] = await store.alerts.raise([{ subject: truck, type: 'gps_jump', severity: 'minor' }])
    assert.equal(again.opened, true)
    assert.notEqual(again.id, opened.id, 'a cleared alert is never reused')
    assert.equal(again.count, 1)
    assert.equal(again.acknowledged, false)
    assert.equal((await store.alerts.get(opened.id))?.status, 'cleared', 'the old one stays cleared')

    // The events, one per state change, none for the bump; the cleared alert's history is its own.
    assert.deepEqual(await eventsOf(opened.id), ['alert.opened', 'alert.acknowledged', 'alert.cleared'])
    assert.deepEqual(await eventsOf(again.id), ['alert.opened'])
  })

  test('a batch raise: one alert per (subject, type), its count the occurrences in the batch', async () => {
    const subjects = Array.from({ length: 50 }, (_, i): Subject => ({ kind: 'device', id: `fleet-${i}` }))
    const raises = subjects.flatMap((subject) => [
      { subject, type: 'stuck', severity: 'warning' as const },
      { subject, type: 'stuck', severity: 'warning' as const, count: 2 },
      { subject, type: 'missing_key', severity: 'minor' as const },
    ])
    const out = await store.alerts.raise(raises)
    assert.equal(out.length, 100)
    assert.ok(out.every((a) => a.opened))
    assert.deepEqual(new Set(out.filter((a) => a.type === 'stuck').map((a) => a.count)), new Set([3]))
    const active = await store.alerts.activeSubjects('device', 'stuck')
    assert.equal(active.filter((id) => id.startsWith('fleet-')).length, 50)

    const cleared = await store.alerts.clear(subjects.map((subject) => ({ subject, type: 'stuck' })))
    assert.equal(cleared.length, 50)
    assert.ok(cleared.every((a) => a.status === 'cleared'))
    assert.deepEqual(await store.alerts.clear([{ subject: subjects[0], type: 'stuck' }]), [], 'nothing left')
  })

  test('one raise and one clear by subject and type, as a caller with a single condition writes them', async () => {
    const subject: Subject = { kind: 'device', id: 'single' }
    const [a] = await store.alerts.raise({
      subject,
      type: 'device_check',
      severity: 'major',
      details: { n: 5 },
    })
    assert.equal(a.opened, true)
    const [cleared] = await store.alerts.clear(subject, 'device_check')
    assert.equal(cleared.id, a.id)
    assert.equal(cleared.status, 'cleared')
    assert.deepEqual(await store.alerts.clear(subject, 'device_check'), [])
  })

  test('raises of one new alert from many connections at once open it once and count every raise', async () => {
    const subject: Subject = { kind: 'service', id: 'host:all' }
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.alerts.raise([{ subject, type: 'race', severity: 'critical' }])),
    )
    const ids = new Set(results.map(([a]) => a.id))
    assert.equal(ids.size, 1, 'the partial unique index lets one active alert exist')
    assert.equal(results.filter(([a]) => a.opened).length, 1)
    assert.equal((await store.alerts.get([...ids][0]))?.count, 20)
  })

  test('a raise may carry when it was first and last seen (a failure written after an outage)', async () => {
    const firstSeen = new Date(Date.now() - 60_000)
    const lastSeen = new Date(Date.now() - 5_000)
    const [a] = await store.alerts.raise([
      {
        subject: { kind: 'service', id: 'h:x' },
        type: 'postgres_down',
        severity: 'critical',
        firstSeen,
        lastSeen,
        count: 12,
      },
    ])
    assert.equal(a.firstSeen, firstSeen.toISOString())
    assert.equal(a.lastSeen, lastSeen.toISOString())
    assert.equal(a.count, 12)
  })

  test('the list filters by status, acknowledgement, severity, device, service and type, keyset-paged', async () => {
    const page1 = await store.alerts.list({ deviceId: 'truck-7', limit: 1, order: 'asc' })
    assert.equal(page1.items.length, 1)
    assert.equal(page1.items[0].status, 'cleared')
    const page2 = await store.alerts.list({ deviceId: 'truck-7', limit: 1, order: 'asc', after: page1.next! })
    assert.equal(page2.items[0].status, 'active')
    assert.equal(page2.next, null)
    const critical = await store.alerts.list({
      severity: ['critical'],
      service: 'host:all',
      limit: 10,
      order: 'desc',
    })
    assert.deepEqual(
      critical.items.map((a) => a.type),
      ['race'],
    )
    const unacked = await store.alerts.list({
      acknowledged: false,
      type: 'gps_jump',
      limit: 10,
      order: 'desc',
    })
    assert.deepEqual(
      unacked.items.map((a) => a.status),
      ['active'],
    )
    assert.equal(
      (await store.alerts.list({ status: 'active', type: 'stuck', limit: 10, order: 'desc' })).items.length,
      0,
    )
  })

  test('an unknown or malformed id is no alert', async () => {
    assert.equal(await store.alerts.get('999999'), undefined)
    assert.equal(await store.alerts.acknowledge('nope'), undefined)
    assert.equal(await store.alerts.clearById('1; DROP TABLE alerts'), undefined)
  })

  test('the offline sweep: silence while watched, the longest silent first, cleared on return, retirement or deletion', async () => {
    const ids = ['sw-a', 'sw-b', 'sw-c', 'sw-never', 'sw-retired']
    for (const id of ids) await store.devices.create({ id, name: id, tokenHash: `h-${id}` })
    const silentFor = (id: string, s: number) =>
      store.pool.query(`UPDATE devices SET last_seen_at = now() - make_interval(secs => $2) WHERE id = $1`, [
        id,
        s,
      ])
    await silentFor('sw-a', 3600)
    await silentFor('sw-b', 1800)
    await silentFor('sw-c', 10)
    await silentFor('sw-retired', 3600)
    await store.devices.retire('sw-retired')
    const offline = async () =>
      (await store.alerts.activeSubjects('device', 'offline')).filter((id) => id.startsWith('sw-'))

    // Watched only for a moment (a restart): silence from before does not count yet.
    const none = await store.alerts.sweepOffline(60, 0, new Date(), 1000)
    assert.deepEqual(
      none.opened.filter((a) => a.deviceId!.startsWith('sw-')),
      [],
    )
    const longAgo = new Date(Date.now() - 86_400_000)
    const first = await store.alerts.sweepOffline(60, 0, longAgo, 1)
    assert.deepEqual(
      first.opened.map((a) => a.deviceId),
      ['sw-a'],
      'at most `limit`, the longest silent first',
    )
    await store.alerts.sweepOffline(60, 0, longAgo, 1000)
    assert.deepEqual((await offline()).sort(), ['sw-a', 'sw-b'], 'not c (10 s), nor never-sent, nor retired')
    // Silent 1800 s is within 60 s plus a lag of 3600 s: a reading may be queued.
    await store.alerts.sweepOffline(60, 3600, longAgo, 1000)
    assert.deepEqual((await offline()).sort(), ['sw-a', 'sw-b'], 'nothing is opened twice')

    await silentFor('sw-a', 0)
    await store.devices.delete('sw-b')
    const back = await store.alerts.sweepOffline(60, 0, longAgo, 1000)
    assert.deepEqual(back.cleared.map((a) => a.deviceId).sort(), ['sw-a', 'sw-b'])
    assert.deepEqual(await offline(), [])
  })

  test('event ids are committed in id order, so a reader following the ids misses none', async () => {
    // Transactions that each emit, racing: whatever order they commit in, a reader that polls "after the last
    // id seen" while they run ends up with every event, each once.
    const seen: number[] = []
    let last = await store.alerts.lastEventSeq()
    let running = true
    const reader = (async () => {
      while (running) {
        for (const e of await store.alerts.eventsAfter(last, 1000)) {
          seen.push(e.seq)
          last = e.seq
        }
      }
    })()
    const from = last
    // Six writers at once, as many as the pool has connections besides the reader's, each raising in turn.
    await Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let i = 0; i < 20; i++)
          await store.alerts.raise([
            { subject: { kind: 'device', id: `order-${w}-${i}` }, type: 'offline', severity: 'major' },
          ])
      }),
    )
    running = false
    await reader
    for (const e of await store.alerts.eventsAfter(last, 1000)) seen.push(e.seq)
    const expected = (await store.alerts.eventsAfter(from, 1000)).map((e) => e.seq)
    assert.equal(expected.length, 120)
    assert.deepEqual(seen, expected)
  })
})
