import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createLogger } from '../../src/logger.js'
import { Notifications } from '../../src/store/notifications.js'
import { Db } from '../../src/store/pool.js'
import { announceStored, noticePayloads, parseNotice, STORED_CHANNEL } from '../../src/store/stored.js'
import { freshDatabase, waitFor } from '../helpers/index.js'

describe('what an ingest batch announces to the live streams', () => {
  test('a notice too large for one NOTIFY is split under its 8000-byte limit, the counts in the first part', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `d${String(i).padStart(15, 'x')}`)
    const parts = noticePayloads({ stored: 5000, quarantined: 3, ids })
    assert.ok(parts.length > 1)
    for (const p of parts) assert.ok(Buffer.byteLength(p) < 8000, `${Buffer.byteLength(p)} bytes`)
    const read = parts.map((p) => parseNotice(p)!)
    assert.deepEqual(
      read.map((n) => [n.stored, n.quarantined]),
      parts.map((_, i) => (i === 0 ? [5000, 3] : [0, 0])),
    )
    assert.deepEqual(
      read.flatMap((n) => n.ids),
      ids,
    )
    assert.equal(parseNotice('not json'), undefined)
  })

  test('a listener hears a batch only once it commits, and never a rolled-back one', async () => {
    const db = new Db(await freshDatabase(), createLogger('silent'), 1)
    const heard: string[] = []

    const listener = await new Notifications(db, createLogger('silent')).listen(STORED_CHANNEL, {
      notify: (p) => heard.push(...(parseNotice(p)?.ids ?? [])),
      resumed: () => {},
    })
    const client = await db.checkout()
    try {
      await client.query('BEGIN')
      await announceStored(client, { stored: 1, quarantined: 0, ids: ['rolled-back'] })
      await client.query('ROLLBACK')
      await client.query('BEGIN')
      await announceStored(client, { stored: 1, quarantined: 0, ids: ['committed'] })
      // Inside the open transaction nothing is delivered yet.
      await new Promise((r) => setTimeout(r, 50))
      assert.equal(heard.length, 0)
      await client.query('COMMIT')
      await waitFor(() => heard.length > 0)
      // A batch of duplicates stored nothing: it says nothing.
      await client.query('BEGIN')
      await announceStored(client, { stored: 0, quarantined: 0, ids: ['nothing'] })
      await client.query('COMMIT')
      await client.query(`NOTIFY ${STORED_CHANNEL}, '{"ids":["marker"]}'`)
      await waitFor(() => heard.includes('marker'))
      assert.deepEqual(heard, ['committed', 'marker'])
    } finally {
      client.release()
      await listener.stop()
      await db.end()
    }
  })
})
