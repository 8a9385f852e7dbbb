import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import pino from 'pino'
import { serviceName } from '../../src/organizer/index.js'
import { EmbeddedDatabase, freePort } from '../../src/store/embedded.js'
import { startPlatform, waitFor } from '../helpers/index.js'

const ready = async (base: string) => {
  const r = await fetch(`${base}/readyz`)
  return { status: r.status, body: await r.json() }
}

describe('organizer: service checks', () => {
  test('stopping PostgreSQL opens a service alert and /readyz turns 503; both clear after it returns', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iotcore-checks-'))
    const db = new EmbeddedDatabase(dir, pino({ level: 'warn' }), await freePort())
    const url = await db.start()
    const p = await startPlatform({ IOTCORE_CHECK_INTERVAL: '1' }, { databaseUrl: url })
    try {
      assert.equal((await ready(p.base)).status, 200)
      await db.stop()
      const down = await waitFor(async () => {
        const r = await ready(p.base)
        return r.status === 503 && r.body.components.checks.failing.postgres && r
      })
      assert.match(down.body.components.checks.failing.postgres, /PostgreSQL does not answer/)
      assert.equal(down.body.components.checks.ok, false)
      assert.equal(await p.metric('iotcore_check_up', 'check="postgres"'), 0)
      const backAt = Date.now()

      await db.start()
      await waitFor(async () => (await ready(p.base)).status === 200, 120_000, '/readyz 200 again')
      // Written once the database is back, with the time it was first seen, and cleared since it is over.
      const alert = await waitFor(async () => {
        const r = await p.req('GET', '/api/v1/alerts?type=postgres_down')
        return r.body.items?.[0]?.status === 'cleared' && r.body.items[0]
      })
      assert.equal(alert.severity, 'critical')
      assert.equal(alert.service, serviceName(p.app.config.roles))
      assert.ok(alert.count >= 1)
      assert.ok(Date.parse(alert.firstSeen) < backAt, 'first seen during the outage, not when written')
      assert.match(alert.details.detail, /PostgreSQL does not answer/)
      assert.equal(await p.metric('iotcore_check_up', 'check="postgres"'), 1)
      assert.deepEqual((await ready(p.base)).body.components.checks, { ok: true, failing: {} })
    } finally {
      await p.stop()
      await db.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('the counters add up under traffic; an injected drift opens a critical alert with the numbers', async () => {
    const p = await startPlatform({ IOTCORE_CHECK_INTERVAL: '1' })
    try {
      const dev = await p.createDevice('counted')
      for (let i = 0; i < 5; i++) {
        const r = await p.postTelemetry(dev, [
          { msgId: `m${i}`, v: i },
          { msgId: `m${i}`, v: i },
          { v: 'x', bad: {} },
        ])
        assert.equal(r.status, 202)
      }
      await waitFor(async () => (await p.metric('iotcore_messages_duplicate_total')) === 5)
      await waitFor(
        async () => (await p.metric('iotcore_check_up', 'check="counters"')) === 1,
        20_000,
        'a balanced check',
      )
      assert.equal(await p.metric('iotcore_counters_unaccounted'), 0)

      // Five acknowledged readings that never reach the queue: what a lost append would look like.
      p.app.metrics.acked.inc({ transport: 'http' }, 5)
      const alert = await waitFor(async () => {
        const r = await p.req('GET', '/api/v1/alerts?type=counter_drift&status=active')
        return r.body.items?.[0]
      })
      assert.equal(alert.severity, 'critical')
      const d = alert.details
      assert.equal(d.unaccounted, 5)
      assert.equal(d.acked, 20)
      assert.deepEqual([d.stored, d.duplicate, d.quarantined, d.queued], [5, 5, 5, 0])
      assert.match(
        d.detail,
        /20 readings acked, 5 stored \+ 5 duplicate \+ 5 quarantined.*5 acked readings are unaccounted for/,
      )
      assert.equal(await p.metric('iotcore_counters_unaccounted'), 5)
      assert.equal(await p.metric('iotcore_check_up', 'check="counters"'), 0)
      const r = await ready(p.base)
      assert.equal(r.status, 200, 'a drift is alerted, and the process stays ready')
      assert.match(r.body.components.checks.failing.counters, /unaccounted/)
    } finally {
      await p.stop()
    }
  })
})
