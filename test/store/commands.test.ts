import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { hostname } from 'node:os'
import type { Store } from '../../src/store/index.js'
import { freshStore, waitFor } from '../helpers/index.js'

async function device(store: Store, id: string): Promise<void> {
  await store.devices.create({ id, name: id, tokenHash: `hash-${id}` })
}

const status = async (store: Store, deviceId: string, id: string) => (await store.commands.get(deviceId, id))!

describe('store: commands', () => {
  test('a queued command is announced with its device id when it commits', async () => {
    const store = await freshStore()
    const heard: string[] = []
    const listener = await store.notifications.listen(store.commands.channel, {
      notify: (d) => heard.push(d),
      resumed: () => {},
    })
    try {
      await device(store, 'n1')
      const c = await store.commands.create({ deviceId: 'n1', name: 'x', params: {}, ttlSeconds: 60 })
      assert.equal(c.status, 'queued')
      await waitFor(() => heard.includes('n1'), 20_000, 'the notification')
    } finally {
      await listener.stop()
      await store.stop()
    }
  })

  test('claims from two processes at once take every waiting command once, oldest first, none expired', async () => {
    const a = await freshStore()
    const b = await freshStore(a.url)
    try {
      await device(a, 'c1')
      const ids: string[] = []
      for (let i = 0; i < 60; i++)
        ids.push(
          (await a.commands.create({ deviceId: 'c1', name: `n${i}`, params: { i }, ttlSeconds: 60 })).id,
        )
      const old = await a.commands.create({ deviceId: 'c1', name: 'old', params: {}, ttlSeconds: 60 })
      await a.pool.query(`UPDATE commands SET expires_at = now() - interval '1 second' WHERE id = $1`, [
        old.id,
      ])

      const claims = await Promise.all([
        a.commands.claim('c1', 'proc-a', 25),
        b.commands.claim('c1', 'proc-b', 25),
        a.commands.claim('c1', 'proc-a', 25),
        b.commands.claim('c1', 'proc-b', 25),
      ])
      const taken = claims.flat().map((c) => c.id)
      assert.equal(new Set(taken).size, taken.length, 'no command claimed twice')
      assert.deepEqual([...taken].sort(), [...ids].sort())
      for (const batch of claims) {
        const order = batch.map((c) => Number(c.id))
        assert.deepEqual(
          order,
          [...order].sort((x, y) => x - y),
        )
      }
      assert.deepEqual(await a.commands.claim('c1', 'proc-a', 25), [])
      assert.equal((await status(a, 'c1', old.id)).status, 'queued')
      assert.equal(await a.commands.expire(), 1)
      assert.equal((await status(a, 'c1', old.id)).status, 'expired')
      const first = await status(a, 'c1', ids[0])
      assert.equal(first.status, 'sent')
      assert.equal(first.attempts, 1)
    } finally {
      await a.stop()
      await b.stop()
    }
  })

  test('a send lost with its connection is queued again, and failed after the last attempt; a late PUBACK or answer of another device changes nothing', async () => {
    const store = await freshStore()
    try {
      await device(store, 'l1')
      await device(store, 'l2')
      const c = await store.commands.create({ deviceId: 'l1', name: 'x', params: {}, ttlSeconds: 60 })
      for (let attempt = 1; attempt <= 3; attempt++) {
        assert.equal((await store.commands.claim('l1', 'me', 10)).length, 1)
        // Only the process that claimed it can report it lost.
        await store.commands.lost(c.id, 'someone-else', 'closed', 3)
        assert.equal((await status(store, 'l1', c.id)).status, 'sent')
        await store.commands.lost(c.id, 'me', 'closed', 3)
        const row = await status(store, 'l1', c.id)
        assert.equal(row.attempts, attempt)
        assert.equal(row.status, attempt < 3 ? 'queued' : 'failed')
      }
      assert.match((await status(store, 'l1', c.id)).error!, /sent 3 times.*closed/)
      assert.equal(await store.commands.delivered(c.id), false)
      assert.equal(await store.commands.replied(c.id, 'l1', true, null, null), false)

      const d = await store.commands.create({ deviceId: 'l1', name: 'y', params: {}, ttlSeconds: 60 })
      await store.commands.claim('l1', 'me', 10)
      assert.equal(await store.commands.replied(d.id, 'l2', true, '1', null), false)
      assert.equal(await store.commands.replied(d.id, 'l1', true, '{"ok": 1}', null), true)
      const replied = await status(store, 'l1', d.id)
      assert.equal(replied.status, 'replied')
      assert.deepEqual(replied.result, { ok: 1 })
      assert.ok(replied.deliveredAt, 'an answer implies the device took it')
    } finally {
      await store.stop()
    }
  })

  test('what a gone process left sent is queued again; what a live one holds stays; a stopping one gives its own back', async () => {
    const store = await freshStore()
    try {
      await device(store, 'r1')
      const beat = (id: string) =>
        store.services.beat({ id, roles: ['gateway'], host: hostname(), pid: 1, startedAt: new Date() })
      await beat('alive')
      await beat('silent')
      await store.pool.query(`UPDATE services SET beat_at = now() - interval '1 hour' WHERE id = 'silent'`)
      await beat('stopped')
      await store.services.markStopped('stopped')
      const by: Record<string, string> = {}
      for (const proc of ['alive', 'silent', 'stopped', 'never-beat', 'me']) {
        const c = await store.commands.create({ deviceId: 'r1', name: proc, params: {}, ttlSeconds: 60 })
        await store.commands.claim('r1', proc, 10)
        by[proc] = c.id
      }
      await store.commands.reclaim('me', 90, 'gone')
      const now = async (proc: string) => (await status(store, 'r1', by[proc])).status
      assert.equal(await now('alive'), 'sent')
      assert.equal(await now('me'), 'sent')
      for (const proc of ['silent', 'stopped', 'never-beat']) assert.equal(await now(proc), 'queued', proc)

      await store.commands.release('me', 'stopping')
      assert.equal(await now('me'), 'queued')
      assert.equal((await status(store, 'r1', by.me)).error, 'stopping')
      assert.equal(await now('alive'), 'sent')
    } finally {
      await store.stop()
    }
  })
})
