import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { drained } from '../helpers/stored.js'

const T0 = Date.now() - 3_600_000
const S = 1000

describe('API: quality rules', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  test('a rule is created, listed, read and deleted; its name is unique', async () => {
    const dev = await p.createDevice('r')
    const body = {
      name: 'coolant-hot',
      deviceId: dev.id,
      condition: { type: 'range', key: 'coolant', max: 110 },
      trigger: { type: 'duration', seconds: 300 },
    }
    const created = await p.req('POST', '/api/v1/rules', body)
    assert.equal(created.status, 201)
    assert.deepEqual(
      { ...created.body, id: undefined, createdAt: undefined },
      { ...body, id: undefined, attributes: null, createdAt: undefined },
    )
    const group = await p.req('POST', '/api/v1/rules', {
      name: 'north-position',
      attributes: { fleet: 'north' },
      condition: { type: 'missing', key: 'lat' },
    })
    assert.equal(group.status, 201)
    assert.deepEqual(group.body.trigger, { type: 'simple' }, 'simple unless said otherwise')
    assert.equal(group.body.deviceId, null)
    const listed = await p.req('GET', '/api/v1/rules')
    assert.deepEqual(
      listed.body.rules.map((r: { name: string }) => r.name),
      ['coolant-hot', 'north-position'],
    )
    assert.deepEqual((await p.req('GET', `/api/v1/rules/${created.body.id}`)).body, created.body)
    const dup = await p.req('POST', '/api/v1/rules', body)
    assert.equal(dup.status, 409)
    assert.equal(dup.body.code, 'IOT_ERR_RULE_CONFLICT')
    assert.equal((await p.req('DELETE', `/api/v1/rules/${created.body.id}`)).status, 204)
    const gone = await p.req('DELETE', `/api/v1/rules/${created.body.id}`)
    assert.equal(gone.status, 404)
    assert.equal(gone.body.code, 'IOT_ERR_RULE_NOT_FOUND')
    assert.equal((await p.req('GET', '/api/v1/rules/nope')).status, 404)
    assert.equal((await p.req('DELETE', `/api/v1/rules/${group.body.id}`)).status, 204)
  })

  const refused: Array<[string, Record<string, unknown>, RegExp]> = [
    ['a range without bounds', { condition: { type: 'range', key: 'v' } }, /min, max or both/],
    ['min above max', { condition: { type: 'range', key: 'v', min: 5, max: 1 } }, /above max/],
    ['a stuck condition without seconds', { condition: { type: 'stuck', key: 'v' } }, /needs seconds/],
    [
      'a stuck condition with a duration trigger',
      { condition: { type: 'stuck', key: 'v', seconds: 60 }, trigger: { type: 'duration', seconds: 60 } },
      /its own time/,
    ],
    [
      'a duration without seconds',
      { condition: { type: 'missing', key: 'v' }, trigger: { type: 'duration' } },
      /needs seconds/,
    ],
    [
      'a repeating trigger without count',
      { condition: { type: 'missing', key: 'v' }, trigger: { type: 'repeating', seconds: 60 } },
      /count and seconds/,
    ],
    ['a key no value can have', { condition: { type: 'missing', key: 'ts' } }, /cannot name a value/],
    [
      'both a device and a group',
      { deviceId: 'x', attributes: { a: 1 }, condition: { type: 'missing', key: 'v' } },
      /not both/,
    ],
    ['an unknown condition', { condition: { type: 'above', key: 'v' } }, /condition/],
    ['a name with a comma', { name: 'a,b', condition: { type: 'missing', key: 'v' } }, /name/],
  ]
  for (const [what, body, message] of refused) {
    test(`a rule with ${what} is a 400 that says why`, async () => {
      const r = await p.req('POST', '/api/v1/rules', { name: 'bad', ...body })
      assert.equal(r.status, 400, JSON.stringify(r.body))
      assert.match(r.body.message, message)
    })
  }

  test('a rule for a device that does not exist is a 404', async () => {
    const r = await p.req('POST', '/api/v1/rules', {
      name: 'ghost',
      deviceId: 'no-such-device',
      condition: { type: 'missing', key: 'v' },
    })
    assert.equal(r.status, 404)
    assert.equal(r.body.code, 'IOT_ERR_DEVICE_NOT_FOUND')
  })

  test('the OpenAPI document describes the rules and gaps routes', async () => {
    const doc = await (await fetch(`${p.base}/docs/json`)).json()
    for (const path of ['/api/v1/rules', '/api/v1/rules/{id}', '/api/v1/devices/{id}/gaps'])
      assert.ok(doc.paths[path], path)
  })
})

describe('API: readings flagged by the quality checks, sent over HTTP', () => {
  let p: Platform
  let dev: Device
  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('gps')
  })
  after(() => p.stop())

  test('a 0,0 fix and a 1000 km jump are stored flagged; ?flagged=true lists them with their flags', async () => {
    const readings = [
      { msgId: 'a', ts: T0, lat: 37.98, lon: 23.72 },
      { msgId: 'b', ts: T0 + 60 * S, lat: 0, lon: 0 },
      { msgId: 'c', ts: T0 + 120 * S, lat: 46.98, lon: 23.72 },
      { msgId: 'd', ts: T0 + 180 * S, lat: 37.99, lon: 23.72 },
    ]
    assert.equal((await p.postTelemetry(dev, readings)).status, 202)
    const all = await waitFor(async () => {
      const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=lat&order=asc`)
      return r.body.lat.length === 4 && r.body.lat
    })
    assert.deepEqual(all, [
      { ts: T0, value: 37.98 },
      { ts: T0 + 60 * S, value: 0, flags: ['gps_zero'] },
      { ts: T0 + 120 * S, value: 46.98, flags: ['gps_jump'] },
      { ts: T0 + 180 * S, value: 37.99 },
    ])
    const only = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=lat&order=asc&flagged=true`)
    assert.deepEqual(only.body.lat, [all[1], all[2]])
    const count = await p.req(
      'GET',
      `/api/v1/devices/${dev.id}/telemetry?keys=lat&flagged=true&agg=count&interval=1d&from=${T0}`,
    )
    assert.equal(
      count.body.lat.reduce((n: number, b: { value: number }) => n + b.value, 0),
      2,
    )
  })

  test('a sequence gap is reported by GET /devices/:id/gaps and closed when the missing readings arrive', async () => {
    const d = await p.createDevice('seq')
    const send = (seqs: number[]) =>
      p.postTelemetry(
        d,
        seqs.map((seq) => ({ msgId: `m${seq}`, ts: T0 + seq * S, seq, v: seq })),
      )
    await send([1, 2, 5, 6])
    const open = await waitFor(async () => {
      const r = await p.req('GET', `/api/v1/devices/${d.id}/gaps?status=open`)
      return r.body.gaps.length > 0 && r.body.gaps
    })
    assert.equal(open.length, 1)
    assert.deepEqual(
      [open[0].from, open[0].to, open[0].missing, open[0].missingCount, open[0].status, open[0].closedAt],
      [3, 4, [[3, 4]], 2, 'open', null],
    )
    // 4 resent, then 3 late, and 4 again: a duplicate changes nothing.
    await send([4])
    await send([3, 4])
    const closed = await waitFor(async () => {
      const r = await p.req('GET', `/api/v1/devices/${d.id}/gaps`)
      return r.body.gaps[0]?.status === 'closed' && r.body.gaps
    })
    assert.equal(closed.length, 1)
    assert.deepEqual([closed[0].missing, closed[0].missingCount], [[], 0])
    assert.ok(closed[0].closedAt)
    assert.equal((await p.req('GET', '/api/v1/devices/nope/gaps')).status, 404)
  })
})

describe('API: a DURATION rule keeps its clock across a platform restart', () => {
  test('the reading that completes the duration after a restart is flagged; the ones before are not', async () => {
    let p = await startPlatform()
    const { dataDir, databaseUrl } = p
    try {
      const dev = await p.createDevice('hot')
      const rule = await p.req('POST', '/api/v1/rules', {
        name: 'hot',
        deviceId: dev.id,
        condition: { type: 'range', key: 'coolant', max: 100 },
        trigger: { type: 'duration', seconds: 60 },
      })
      assert.equal(rule.status, 201)
      await p.postTelemetry(dev, [
        { msgId: '00', ts: T0, coolant: 120 },
        { msgId: '30', ts: T0 + 30 * S, coolant: 125 },
      ])
      await drained(p)
      // The platform stops and starts again on the same database and data dir.
      await p.app.stop()
      p = await startPlatform({}, { dataDir, databaseUrl })
      await p.postTelemetry(dev, [{ msgId: '60', ts: T0 + 60 * S, coolant: 121 }])
      const points = await waitFor(async () => {
        const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=coolant&order=asc`)
        return r.body.coolant.length === 3 && r.body.coolant
      })
      assert.deepEqual(points, [
        { ts: T0, value: 120 },
        { ts: T0 + 30 * S, value: 125 },
        { ts: T0 + 60 * S, value: 121, flags: ['rule:hot'] },
      ])
    } finally {
      await p.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('API: the device alerts the checks raise, in GET /alerts', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({
      IOTCORE_DEVICE_CHECK_VIOLATIONS: '2',
      IOTCORE_GAP_ALERT_AFTER: '0',
      IOTCORE_CHECK_INTERVAL: '1',
    })
  })
  after(() => p.stop())

  const alertsOf = async (deviceId: string, type: string) =>
    (await p.req('GET', `/api/v1/alerts?deviceId=${deviceId}&type=${type}`)).body.items

  test('past the threshold of flagged readings a device_check alert opens, with what was counted', async () => {
    const dev = await p.createDevice('broken-gps')
    await p.postTelemetry(dev, [
      { msgId: 'a', ts: T0, lat: 0, lon: 0 },
      { msgId: 'b', ts: T0 + S, lat: 0, lon: 0 },
    ])
    const [alert] = await waitFor(async () => {
      const items = await alertsOf(dev.id, 'device_check')
      return items.length > 0 && items
    })
    assert.deepEqual(
      [
        alert.status,
        alert.severity,
        alert.deviceId,
        alert.details.violations,
        alert.details.lastReading.flags,
      ],
      ['active', 'major', dev.id, 2, ['gps_zero']],
    )
  })

  test('a sequence gap left open opens a sequence_gap alert; the missing readings arriving clear it', async () => {
    const dev = await p.createDevice('gappy')
    const send = (seqs: number[]) =>
      p.postTelemetry(
        dev,
        seqs.map((seq) => ({ msgId: `m${seq}`, ts: T0 + seq * S, seq })),
      )
    await send([1, 2, 4])
    const [open] = await waitFor(async () => {
      const items = await alertsOf(dev.id, 'sequence_gap')
      return items.length > 0 && items
    })
    assert.deepEqual(
      [open.status, open.severity, open.details.gaps[0].from, open.details.gaps[0].to],
      ['active', 'minor', 3, 3],
    )
    await send([3])
    const [cleared] = await waitFor(async () => {
      const items = await alertsOf(dev.id, 'sequence_gap')
      return items[0]?.status === 'cleared' && items
    })
    assert.equal(cleared.id, open.id)
  })
})
