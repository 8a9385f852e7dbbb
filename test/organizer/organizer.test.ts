import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { createMetrics } from '../../src/metrics/index.js'
import { Organizer, type OrganizerOptions } from '../../src/organizer/index.js'
import type { Store } from '../../src/store/index.js'
import { type Platform, freshStore, startPlatform } from '../helpers/index.js'

const log = pino({ level: 'silent' })

/** An organizer on `store` as a process would run it, checking every `interval` seconds. */
function organizer(store: Store, interval: number, logger = log): Organizer {
  const opts: OrganizerOptions = {
    checkIntervalSeconds: interval,
    offlineAfterSeconds: 600,
    webhookRetryForSeconds: 3 * 86_400,
  }
  return new Organizer(store, opts, undefined, createMetrics(), logger)
}

/** A logger whose lines are kept, parsed, in `lines`. */
function recordingLog() {
  const lines: Array<Record<string, any>> = []
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(chunk.toString()))
      done()
    },
  })
  return { log: pino({ level: 'info' }, sink), lines }
}

describe('organizer', () => {
  test('runs once across processes: one leader holds the advisory lock, another takes over when it goes', async () => {
    const store = await freshStore()
    const a = organizer(store, 3600)
    const b = organizer(store, 3600)
    try {
      await a.tick()
      await b.tick()
      assert.equal(a.leader, true)
      assert.equal(b.leader, false)
      await a.stop()
      await b.tick()
      assert.equal(b.leader, true)
    } finally {
      await a.stop()
      await b.stop()
      await store.stop()
    }
  })

  test('the leader reports a silent service once with an alert, clears it when it beats, and forgets week-old ones', async () => {
    const store = await freshStore()
    const rec = recordingLog()
    const o = organizer(store, 10, rec.log)
    const started = new Date()
    const ago = (id: string, seconds: number) =>
      store.pool.query(`UPDATE services SET beat_at = now() - make_interval(secs => $2) WHERE id = $1`, [
        id,
        seconds,
      ])
    try {
      for (const id of ['quiet', 'gone', 'fine'])
        await store.services.beat({ id, roles: ['gateway'], host: 'h', pid: 1, startedAt: started })
      await ago('quiet', 31)
      await ago('gone', 8 * 86_400)
      await o.tick()
      await o.tick()
      const silent = () => rec.lines.filter((l) => l.msg === 'service silent').map((l) => l.service)
      assert.deepEqual(silent().sort(), ['gone', 'quiet'])
      assert.deepEqual((await store.services.list(10)).map((s) => s.id).sort(), ['fine', 'quiet'])
      // The silent one has an alert; the forgotten one's is cleared with it.
      assert.deepEqual(await store.alerts.activeSubjects('service', 'silent'), ['quiet'])
      await store.services.beat({ id: 'quiet', roles: ['gateway'], host: 'h', pid: 1, startedAt: started })
      await o.tick()
      assert.ok(rec.lines.some((l) => l.msg === 'service beating again' && l.service === 'quiet'))
      assert.deepEqual(await store.alerts.activeSubjects('service', 'silent'), [])
      const silentAlerts = await store.alerts.list({ type: 'silent', limit: 10, order: 'asc' })
      assert.deepEqual(silentAlerts.items.map((a) => [a.service, a.status]).sort(), [
        ['gone', 'cleared'],
        ['quiet', 'cleared'],
      ])
      assert.ok(!rec.lines.some((l) => l.msg === 'service beating again' && l.service === 'gone'))
    } finally {
      await o.stop()
      await store.stop()
    }
  })

  describe('heartbeats', () => {
    let p: Platform
    before(async () => {
      p = await startPlatform({ IOTCORE_ROLES: 'api,gateway,ingest,organizer' })
    })
    after(() => p.stop())

    test('every process beats into services, listed at GET /api/v1/services', async () => {
      const r = await p.req('GET', '/api/v1/services')
      assert.equal(r.status, 200)
      const me = r.body.services.find((s: { id: string }) => s.id === p.app.heartbeat!.id)
      assert.ok(me)
      assert.deepEqual(me.roles, ['api', 'gateway', 'ingest', 'organizer'])
      assert.equal(me.pid, process.pid)
      assert.equal(me.stoppedAt, null)
      assert.equal(p.app.organizer!.leader, true)
    })

    test('a stopped heartbeat marks its service stopped', async () => {
      await p.app.heartbeat!.stop()
      const r = await p.req('GET', '/api/v1/services')
      const me = r.body.services.find((s: { id: string }) => s.id === p.app.heartbeat!.id)
      assert.notEqual(me.stoppedAt, null)
    })
  })
})
