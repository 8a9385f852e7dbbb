import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { NEVER_EXPIRES, type Store } from '../../src/store/index.js'
import { freshStore, waitFor } from '../helpers/index.js'

describe('store: MQTT sessions', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  /** As if the session was last written or touched this many seconds ago. */
  const age = (key: string, seconds: number) =>
    store.pool.query(
      `UPDATE mqtt_sessions SET updated_at = now() - make_interval(secs => $2) WHERE client_key = $1`,
      [key, seconds],
    )

  test('save then get returns the subscriptions; a second save replaces them', async () => {
    await store.sessions.save('d1/a', 'd1', { 'devices/d1/commands': 1 }, 60)
    assert.deepEqual(await store.sessions.get('d1/a'), {
      subscriptions: { 'devices/d1/commands': 1 },
      expired: false,
    })
    await store.sessions.save('d1/a', 'd1', { 'devices/d1/config': 0 }, 60)
    assert.deepEqual((await store.sessions.get('d1/a'))?.subscriptions, { 'devices/d1/config': 0 })
    assert.equal(await store.sessions.get('d1/none'), undefined)
  })

  test('a session is expired once its expiry has passed since the last write; NEVER_EXPIRES never is', async () => {
    await store.sessions.save('d1/short', 'd1', {}, 3600)
    await store.sessions.save('d1/never', 'd1', {}, NEVER_EXPIRES)
    await age('d1/short', 3599)
    assert.equal((await store.sessions.get('d1/short'))?.expired, false)
    await age('d1/short', 3601)
    await age('d1/never', 10 * 365 * 86_400)
    assert.equal((await store.sessions.get('d1/short'))?.expired, true)
    assert.equal((await store.sessions.get('d1/never'))?.expired, false)
  })

  test('touch restarts the expiry, with the expiry given at disconnect', async () => {
    await store.sessions.save('d1/touched', 'd1', { t: 1 }, 10)
    await age('d1/touched', 100)
    assert.equal((await store.sessions.get('d1/touched'))?.expired, true)
    await store.sessions.touch('d1/touched', 10)
    assert.deepEqual(await store.sessions.get('d1/touched'), { subscriptions: { t: 1 }, expired: false })
    await store.sessions.touch('d1/touched', 3600)
    await age('d1/touched', 100)
    assert.equal((await store.sessions.get('d1/touched'))?.expired, false)
  })

  test("a save is announced on the sessions channel with its key's digest, once committed", async () => {
    const heard: string[] = []
    const l = await store.notifications.listen(store.sessions.channel, {
      notify: (d) => heard.push(d),
      resumed: () => {},
    })
    try {
      await store.sessions.save('d1/announced', 'd1', {}, 60)
      await store.sessions.touch('d1/announced', 60)
      await store.sessions.delete('d1/announced')
      await store.sessions.save('d1/again', 'd1', {}, 60)
      await waitFor(() => heard.length === 2, 20_000, 'two notifications')
      // Only saves are announced: a touch or a delete never makes a session appear.
      assert.deepEqual(heard, [store.sessions.digest('d1/announced'), store.sessions.digest('d1/again')])
    } finally {
      await l.stop()
    }
  })

  test('a key longer than a notification may carry is saved and announced by its digest', async () => {
    const key = `d1/${'x'.repeat(20_000)}`
    const heard: string[] = []
    const l = await store.notifications.listen(store.sessions.channel, {
      notify: (d) => heard.push(d),
      resumed: () => {},
    })
    try {
      await store.sessions.save(key, 'd1', { t: 1 }, 60)
      assert.deepEqual((await store.sessions.get(key))?.subscriptions, { t: 1 })
      await waitFor(() => heard.includes(store.sessions.digest(key)), 20_000, 'the notification')
    } finally {
      await l.stop()
    }
  })

  test('digests lists the digest of every stored key; equal keys have equal digests, others differ', async () => {
    const fresh = await freshStore()
    try {
      await fresh.sessions.save('d2/a', 'd2', {}, 60)
      await fresh.sessions.save('d2/b', 'd2', {}, 1)
      // Expired sessions are listed too: they are still stored, and a clean start must still delete them.
      await fresh.pool.query(`UPDATE mqtt_sessions SET updated_at = now() - interval '1 hour'`)
      assert.deepEqual(
        (await fresh.sessions.digests()).sort(),
        [fresh.sessions.digest('d2/a'), fresh.sessions.digest('d2/b')].sort(),
      )
      assert.equal(fresh.sessions.digest('d2/a'), store.sessions.digest('d2/a'))
      assert.notEqual(fresh.sessions.digest('d2/a'), fresh.sessions.digest('d2/b'))
    } finally {
      await fresh.stop()
    }
  })

  test('delete forgets the session', async () => {
    await store.sessions.save('d1/gone', 'd1', { t: 1 }, 60)
    await store.sessions.delete('d1/gone')
    assert.equal(await store.sessions.get('d1/gone'), undefined)
  })
})
