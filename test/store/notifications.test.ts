import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createLogger } from '../../src/logger.js'
import { Store } from '../../src/store/index.js'
import { freshStore, waitFor } from '../helpers/index.js'

const CHANNEL = 'iotcore_test'

describe('store: notifications', () => {
  let a: Store
  let b: Store
  before(async () => {
    a = await freshStore()
    b = await freshStore(a.url)
  })
  after(async () => {
    await a.stop()
    await b.stop()
  })

  /** Backends of this database that LISTEN (a dedicated connection's last statement). */
  const listeners = async () =>
    (
      await a.pool.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1`,
        [`LISTEN ${CHANNEL}`],
      )
    ).rows.map((r) => r.pid as number)
  /** The one listening backend, once the previous test's is gone. */
  const onlyListener = () =>
    waitFor(
      async () => {
        const pids = await listeners()
        return pids.length === 1 && pids[0]
      },
      20_000,
      'one listening connection',
    )

  test("a notification from one store reaches another store's listener, in order", async () => {
    const got: string[] = []
    const l = await b.notifications.listen(CHANNEL, { notify: (p) => got.push(p), resumed: () => {} })
    try {
      await a.notifications.notify(CHANNEL, 'one')
      await a.notifications.notify(CHANNEL, 'two')
      await waitFor(() => got.length === 2, 20_000, 'two notifications')
      assert.deepEqual(got, ['one', 'two'])
    } finally {
      await l.stop()
    }
  })

  test('a listener whose connection is lost says so, listens again and says so, then hears what follows', async () => {
    const got: string[] = []
    let resumed = 0
    let lost = 0
    const l = await b.notifications.listen(CHANNEL, {
      notify: (p) => got.push(p),
      resumed: () => resumed++,
      lost: () => lost++,
    })
    try {
      const pid = await onlyListener()
      assert.equal(lost, 0)
      await a.pool.query('SELECT pg_terminate_backend($1)', [pid])
      await waitFor(() => lost === 1, 20_000, 'the listener saying it is lost')
      await waitFor(() => resumed === 1, 20_000, 'the listener resuming')
      assert.equal(lost, 1)
      assert.notDeepEqual(await listeners(), [pid])
      await a.notifications.notify(CHANNEL, 'after')
      await waitFor(() => got.includes('after'), 20_000, 'the notification after the loss')
    } finally {
      await l.stop()
    }
  })

  test('a listener whose first attempt fails has said so by the time listen resolves', async () => {
    const unreachable = new Store('postgres://postgres@127.0.0.1:1/none', createLogger('silent'), 1)
    let lost = 0
    const l = await unreachable.notifications.listen(CHANNEL, {
      notify: () => {},
      resumed: () => {},
      lost: () => lost++,
    })
    assert.equal(lost, 1)
    await l.stop()
    await unreachable.stop()
  })

  test('stop ends the listening connection', async () => {
    const l = await b.notifications.listen(CHANNEL, { notify: () => {}, resumed: () => {} })
    await onlyListener()
    await l.stop()
    await waitFor(async () => (await listeners()).length === 0, 20_000, 'the connection gone')
  })

  test('a channel that is not a plain identifier is refused before reaching SQL', async () => {
    await assert.rejects(
      b.notifications.listen('x; DROP TABLE devices', { notify: () => {}, resumed: () => {} }),
      /not a channel name/,
    )
  })
})
