import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { Organizer } from '../../src/organizer/index.js'
import { Store } from '../../src/store/index.js'
import { type Platform, freshDatabase, startPlatform } from '../helpers/index.js'

const log = pino({ level: 'silent' })

describe('organizer', () => {
  test('runs once across processes: one leader holds the advisory lock, another takes over when it goes', async () => {
    const url = await freshDatabase()
    const store = new Store(url, log, 1)
    await store.start()
    const a = new Organizer(store, 3600, log)
    const b = new Organizer(store, 3600, log)
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
  })
})
