import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  createIngest,
  type DeviceAlert,
  type DeviceAlerts,
  type Ingest,
  metricsEvents,
} from '../../src/ingest/index.js'
import { createLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { createQueue } from '../../src/queue/index.js'
import type { Queue } from '../../src/queue/types.js'
import type { Store } from '../../src/store/index.js'
import { freshStore, testConfig, waitFor } from '../helpers/index.js'
import { device, due, envelope, flagged, stateOf } from '../quality/helpers.js'

/** DeviceAlerts as a recorder: every call, in order; `failing` refuses the calls while set. */
class Recorder implements DeviceAlerts {
  readonly calls: Array<['raise', DeviceAlert] | ['clear', { deviceId: string; type: string }]> = []
  failing = false
  refused = 0
  async raise(alerts: readonly DeviceAlert[]) {
    this.fail()
    for (const a of alerts) this.calls.push(['raise', a])
  }
  async clear(alerts: ReadonlyArray<{ deviceId: string; type: string }>) {
    this.fail()
    for (const a of alerts) this.calls.push(['clear', a])
  }
  private fail() {
    if (!this.failing) return
    this.refused++
    throw new Error('alerts store away')
  }
  of(deviceId: string) {
    return this.calls.filter(([, a]) => a.deviceId === deviceId)
  }
}

describe('ingest: device alerts raised and cleared through DeviceAlerts', () => {
  let store: Store
  let queue: Queue
  let ingest: Ingest
  let dataDir: string
  const alerts = new Recorder()
  before(async () => {
    store = await freshStore()
    dataDir = mkdtempSync(join(tmpdir(), 'iotcore-alerts-'))
    const config = testConfig(store.url, dataDir, {
      IOTCORE_ROLES: 'gateway,ingest',
      IOTCORE_DEVICE_CHECK_VIOLATIONS: '3',
      IOTCORE_GAP_ALERT_AFTER: '0',
      IOTCORE_CHECK_INTERVAL: '1',
    })
    queue = createQueue(config, createLogger('silent'))
    await queue.start()
    ingest = createIngest(config, {
      queue,
      writer: store,
      events: metricsEvents(createMetrics()),
      log: createLogger('silent'),
      alerts,
    })
    ingest.start()
  })
  after(async () => {
    await ingest.stop()
    await queue.stop()
    await store.stop()
    rmSync(dataDir, { recursive: true, force: true })
  })

  test('past the threshold of flagged readings the device_check alert is raised, with what it counted', async () => {
    const id = await device(store)
    const now = Date.now()
    const zero = (msgId: string, ts: number) => ({ msgId, ts, lat: 0, lon: 0 })
    await queue.enqueueAll([envelope(id, [zero('a', now), zero('b', now + 1)], now)])
    await queue.enqueueAll([envelope(id, [{ msgId: 'ok', ts: now + 2, lat: 1, lon: 1 }], now)])
    // Both envelopes judged: the second holds the device's one good position.
    await waitFor(async () => (await stateOf(store, id))?.pos)
    assert.deepEqual(await flagged(store, id), { a: 'gps_zero', b: 'gps_zero' })
    assert.deepEqual(await due(store, id), {}, 'two violations are below the threshold')
    await queue.enqueueAll([envelope(id, [zero('c', now + 3)], now)])
    const [[call, alert]] = await waitFor(() => alerts.of(id).length > 0 && alerts.of(id))
    assert.equal(call, 'raise')
    assert.deepEqual(alert, {
      deviceId: id,
      type: 'device_check',
      severity: 'major',
      details: {
        violations: 3,
        threshold: 3,
        windowSeconds: 3600,
        lastReading: { msgId: 'c', ts: now + 3, flags: ['gps_zero'] },
      },
    })
  })

  test('a gap open past its time raises sequence_gap; the missing readings arriving clear it', async () => {
    const id = await device(store)
    const now = Date.now()
    const r = (seq: number) => ({ msgId: `s${seq}`, ts: now + seq, seq })
    await queue.enqueueAll([envelope(id, [r(1), r(2), r(5)], now)])
    const raised = await waitFor(() => alerts.of(id).length > 0 && alerts.of(id))
    assert.deepEqual(
      raised.map(([c, a]) => [c, a.type, (a as DeviceAlert).severity]),
      [['raise', 'sequence_gap', 'minor']],
    )
    const { gaps } = (raised[0][1] as DeviceAlert).details as { gaps: Array<{ openedAt: string }> }
    assert.deepEqual(gaps, [{ from: 3, to: 4, missing: 2, openedAt: gaps[0].openedAt }])
    await queue.enqueueAll([envelope(id, [r(3), r(4)], Date.now())])
    await waitFor(() => alerts.of(id).length === 2)
    assert.deepEqual(alerts.of(id)[1], ['clear', { deviceId: id, type: 'sequence_gap' }])
  })

  test('an alert the alerts store could not take is handed over once it can', async () => {
    const id = await device(store)
    const now = Date.now()
    alerts.failing = true
    await queue.enqueueAll([
      envelope(
        id,
        [1, 2, 3].map((i) => ({ msgId: `z${i}`, ts: now + i, lat: 0, lon: 0 })),
        now,
      ),
    ])
    await waitFor(() => alerts.refused > 0)
    assert.equal((await due(store, id)).device_check.delivered, false)
    alerts.failing = false
    const calls = await waitFor(() => alerts.of(id).length > 0 && alerts.of(id))
    assert.deepEqual(
      calls.map(([c, a]) => [c, a.type]),
      [['raise', 'device_check']],
    )
    await waitFor(async () => (await due(store, id)).device_check.delivered)
  })
})
