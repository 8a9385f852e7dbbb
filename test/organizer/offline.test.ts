import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

describe('organizer: offline devices', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({ IOTCORE_OFFLINE_AFTER: '1', IOTCORE_CHECK_INTERVAL: '1' })
  })
  after(() => p.stop())

  const offlineAlerts = async (deviceId: string) =>
    (await p.req('GET', `/api/v1/alerts?deviceId=${deviceId}&type=offline&order=asc`)).body.items

  test('a device silent for IOTCORE_OFFLINE_AFTER goes offline, and back online when it sends again', async () => {
    const dev = await p.createDevice('quiet-truck')
    const never = await p.createDevice('never-sent')
    assert.equal((await p.postTelemetry(dev, { v: 1 })).status, 202)
    await waitFor(async () => (await p.req('GET', `/api/v1/devices/${dev.id}`)).body.lastSeenAt)

    const [offline] = await waitFor(async () => {
      const a = await offlineAlerts(dev.id)
      return a.length === 1 && a[0].status === 'active' && a
    })
    assert.equal(offline.severity, 'major')
    assert.equal(offline.details.offlineAfterSeconds, 1)
    assert.ok(offline.details.lastSeenAt)

    assert.equal((await p.postTelemetry(dev, { v: 2 })).status, 202)
    await waitFor(async () => (await p.req('GET', `/api/v1/alerts/${offline.id}`)).body.status === 'cleared')

    // Silent again: a new alert, never the cleared one reopened.
    const again = await waitFor(async () => {
      const a = await offlineAlerts(dev.id)
      return a.length === 2 && a[1].status === 'active' && a[1]
    })
    assert.notEqual(again.id, offline.id)
    assert.deepEqual(await offlineAlerts(never.id), [], 'a device that never sent was never online')
  })

  test("each scheduled job's last run and duration are in /metrics", async () => {
    await p.app.organizer!.tick()
    const text = await (await fetch(`${p.base}/metrics`)).text()
    for (const job of ['heartbeat', 'services', 'offline', 'webhooks', 'checks']) {
      assert.match(text, new RegExp(`iotcore_job_last_run_timestamp_seconds\\{job="${job}"\\} \\d`), job)
      assert.match(text, new RegExp(`iotcore_job_last_duration_seconds\\{job="${job}"\\} \\d`), job)
      assert.match(text, new RegExp(`iotcore_job_runs_total\\{job="${job}",result="ok"\\} [1-9]`), job)
    }
  })
})
