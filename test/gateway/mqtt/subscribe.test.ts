import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Sessions } from '../../../src/gateway/mqtt/sessions.js'
import { createLogger } from '../../../src/logger.js'
import { Store } from '../../../src/store/index.js'
import { type Platform, freshStore, startPlatform, waitFor } from '../../helpers/index.js'
import type { AnyPacket } from '../../helpers/mqtt-raw.js'
import { openClient } from './helpers.js'

describe('MQTT SUBSCRIBE and persistent sessions', () => {
  let p: Platform
  let dev: { id: string; token: string }
  const url = () => `mqtt://127.0.0.1:${p.mqttPort}`
  const commands = () => `devices/${dev.id}/commands`
  const sessionRow = async (clientId: string) =>
    (
      await p.app.store.pool.query('SELECT subscriptions FROM mqtt_sessions WHERE client_key = $1', [
        `${dev.id}/${clientId}`,
      ])
    ).rows[0]

  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('sess')
  })
  after(() => p.stop())

  test('3.1.1 clean session 0 keeps the subscriptions across a restart of the platform: Session Present 1', async () => {
    const first = await openClient(url(), 4, dev, { clientId: 'keep-me', clean: false })
    assert.equal(first.connack.sessionPresent, false)
    await first.client.subscribeAsync(commands(), { qos: 1 })
    await first.client.endAsync()
    await waitFor(async () => (await sessionRow('keep-me'))?.subscriptions[commands()] === 1)

    const { dataDir, databaseUrl } = p
    await p.app.stop()
    p = await startPlatform({}, { dataDir, databaseUrl })

    const again = await openClient(url(), 4, dev, { clientId: 'keep-me', clean: false, resubscribe: false })
    assert.equal(again.connack.sessionPresent, true)
    await again.client.endAsync()
  })

  test('a clean session right after a restart discards the session kept before it', async () => {
    const first = await openClient(url(), 4, dev, { clientId: 'restart-clean', clean: false })
    await first.client.subscribeAsync(commands(), { qos: 1 })
    await first.client.endAsync()
    await waitFor(async () => (await sessionRow('restart-clean'))?.subscriptions[commands()] === 1)

    const { dataDir, databaseUrl } = p
    await p.app.stop()
    p = await startPlatform({}, { dataDir, databaseUrl })

    const clean = await openClient(url(), 4, dev, { clientId: 'restart-clean', clean: true })
    assert.equal(clean.connack.sessionPresent, false)
    await clean.client.endAsync()
    await waitFor(async () => (await sessionRow('restart-clean')) === undefined)
    const after = await openClient(url(), 4, dev, { clientId: 'restart-clean', clean: false })
    assert.equal(after.connack.sessionPresent, false)
    await after.client.endAsync()
  })

  test('a session kept by another gateway process is discarded by a clean start here, either way round', async () => {
    // Kept here before the other process starts: it learns the key when it reads the stored keys at start.
    const before = await openClient(url(), 4, dev, { clientId: 'kept-here', clean: false })
    await before.client.subscribeAsync(commands(), { qos: 1 })
    await before.client.endAsync()
    await waitFor(async () => (await sessionRow('kept-here'))?.subscriptions[commands()] === 1)

    const q = await startPlatform({}, { databaseUrl: p.databaseUrl })
    try {
      const there = `mqtt://127.0.0.1:${q.mqttPort}`
      const cleanThere = await openClient(there, 4, dev, { clientId: 'kept-here', clean: true })
      await cleanThere.client.endAsync()
      await waitFor(async () => (await sessionRow('kept-here')) === undefined)

      // Kept there while this one runs: this one learns the key from the save's notification. A clean start
      // that arrives here before the notification would miss it (see src/gateway/mqtt/sessions.ts), hence
      // the wait for it.
      const v3 = await openClient(there, 4, dev, { clientId: 'kept-there', clean: false })
      await v3.client.subscribeAsync(commands(), { qos: 1 })
      await v3.client.endAsync()
      const v5 = await openClient(there, 5, dev, {
        clientId: 'kept-there-v5',
        clean: false,
        properties: { sessionExpiryInterval: 3600 },
      })
      await v5.client.subscribeAsync(commands(), { qos: 1 })
      await v5.client.endAsync()
      await waitFor(async () => (await sessionRow('kept-there'))?.subscriptions[commands()] === 1)
      await waitFor(async () => (await sessionRow('kept-there-v5'))?.subscriptions[commands()] === 1)
      await waitFor(() => p.app.sessions!.mayExist(`${dev.id}/kept-there`), 20_000, 'the notification')
      await waitFor(() => p.app.sessions!.mayExist(`${dev.id}/kept-there-v5`), 20_000, 'the notification')

      const clean = await openClient(url(), 4, dev, { clientId: 'kept-there', clean: true })
      assert.equal(clean.connack.sessionPresent, false)
      await clean.client.endAsync()
      await waitFor(async () => (await sessionRow('kept-there')) === undefined)
      const resumed = await openClient(there, 4, dev, { clientId: 'kept-there', clean: false })
      assert.equal(resumed.connack.sessionPresent, false)
      await resumed.client.endAsync()

      // v5: a clean start that keeps a session starts an empty one in place of the old.
      const fresh = await openClient(url(), 5, dev, {
        clientId: 'kept-there-v5',
        clean: true,
        properties: { sessionExpiryInterval: 3600 },
      })
      assert.equal(fresh.connack.sessionPresent, false)
      await fresh.client.endAsync()
      await waitFor(async () => {
        const row = await sessionRow('kept-there-v5')
        return row !== undefined && Object.keys(row.subscriptions).length === 0
      })
    } finally {
      await q.stop()
    }
  })

  test('a clean session discards what was kept', async () => {
    const clean = await openClient(url(), 4, dev, { clientId: 'keep-me', clean: true })
    assert.equal(clean.connack.sessionPresent, false)
    await clean.client.endAsync()
    await waitFor(async () => (await sessionRow('keep-me')) === undefined)
    const after = await openClient(url(), 4, dev, { clientId: 'keep-me', clean: false })
    assert.equal(after.connack.sessionPresent, false)
    await after.client.endAsync()
  })

  test('MQTT 5: a Session Expiry Interval keeps the session until it runs out; 0 keeps nothing', async () => {
    const kept = await openClient(url(), 5, dev, {
      clientId: 'v5-kept',
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
    })
    await kept.client.subscribeAsync(commands(), { qos: 1 })
    await kept.client.endAsync()
    await waitFor(async () => (await sessionRow('v5-kept'))?.subscriptions[commands()] === 1)
    const back = await openClient(url(), 5, dev, {
      clientId: 'v5-kept',
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      resubscribe: false,
    })
    assert.equal(back.connack.sessionPresent, true)
    await back.client.endAsync()

    const brief = await openClient(url(), 5, dev, {
      clientId: 'v5-brief',
      clean: false,
      properties: { sessionExpiryInterval: 1 },
    })
    await brief.client.subscribeAsync(commands(), { qos: 1 })
    await brief.client.endAsync()
    await waitFor(async () => (await sessionRow('v5-brief')) !== undefined)
    await new Promise((r) => setTimeout(r, 2100))
    const expired = await openClient(url(), 5, dev, {
      clientId: 'v5-brief',
      clean: false,
      properties: { sessionExpiryInterval: 1 },
    })
    assert.equal(expired.connack.sessionPresent, false)
    await expired.client.endAsync()

    const none = await openClient(url(), 5, dev, { clientId: 'v5-none', clean: false })
    await none.client.subscribeAsync(commands(), { qos: 1 })
    await none.client.endAsync()
    const again = await openClient(url(), 5, dev, { clientId: 'v5-none', clean: false })
    assert.equal(again.connack.sessionPresent, false)
    await again.client.endAsync()
  })
  test("subscribing to another device's topic is refused (0x87 in MQTT 5, 0x80 in 3.1.1); its own commands topic is granted", async () => {
    const me = await p.createDevice('sub')
    const other = await p.createDevice('sub-other')
    for (const [version, refused] of [
      [5, 0x87],
      [4, 0x80],
    ] as const) {
      const { client: c } = await openClient(url(), version, me, { clientId: `sub-${version}` })
      const suback = new Promise<AnyPacket>((resolve) =>
        c.on('packetreceive', (pk) => pk.cmd === 'suback' && resolve(pk as AnyPacket)),
      )
      c.subscribe(
        {
          [`devices/${me.id}/commands`]: { qos: 1 },
          [`devices/${other.id}/commands`]: { qos: 1 },
          'devices/+/commands': { qos: 0 },
          '#': { qos: 0 },
        },
        () => {},
      )
      assert.deepEqual((await suback).granted, [1, refused, refused, refused])
      assert.equal(c.connected, true)
      await c.endAsync()
    }
  })
})

describe('MQTT sessions: which keys a gateway process knows may have a stored session', () => {
  const silent = createLogger('silent')
  const subs = (n: number) => new Map([[`devices/d/commands/${n}`, 1]])
  const stored = async (store: Store, key: string) => (await store.sessions.get(key)) !== undefined

  test('a clean start needs the database only for a key saved here, by another process, or before the start', async () => {
    const here = await freshStore()
    const other = await freshStore(here.url)
    const sessions = new Sessions(here, silent)
    try {
      await other.sessions.save('d/before', 'd', {}, 60)
      await sessions.start()
      assert.equal(sessions.mayExist('d/never'), false)
      assert.equal(sessions.mayExist('d/before'), true)

      assert.equal(sessions.mayExist('d/elsewhere'), false)
      await other.sessions.save('d/elsewhere', 'd', {}, 60)
      await waitFor(() => sessions.mayExist('d/elsewhere'), 20_000, 'the notification')

      sessions.save('d/here', 'd', subs(1), 60)
      assert.equal(sessions.mayExist('d/here'), true)
      await waitFor(() => stored(other, 'd/here'))

      // Without a database, only what needs none can still succeed.
      await here.stop()
      await sessions.discard('d/never')
      for (const key of ['d/before', 'd/elsewhere', 'd/here']) {
        await assert.rejects(sessions.discard(key), `${key} needs a DELETE`)
        // The DELETE failed: the row may still be there.
        assert.equal(sessions.mayExist(key), true)
      }
    } finally {
      await sessions.stop()
      await other.stop()
    }
  })

  test('a discarded key is forgotten, and known again once saved again, here or elsewhere', async () => {
    const here = await freshStore()
    const other = await freshStore(here.url)
    const sessions = new Sessions(here, silent)
    try {
      await sessions.start()
      await other.sessions.save('d/k', 'd', {}, 60)
      await waitFor(() => sessions.mayExist('d/k'), 20_000, 'the notification')
      await sessions.discard('d/k')
      assert.equal(await stored(other, 'd/k'), false)
      assert.equal(sessions.mayExist('d/k'), false)

      sessions.save('d/k', 'd', subs(1), 60)
      assert.equal(sessions.mayExist('d/k'), true)
      await waitFor(() => stored(other, 'd/k'))
      await sessions.discard('d/k')
      assert.equal(await stored(other, 'd/k'), false)

      await other.sessions.save('d/k', 'd', {}, 60)
      await waitFor(() => sessions.mayExist('d/k'), 20_000, 'the notification')
    } finally {
      await sessions.stop()
      await here.stop()
      await other.stop()
    }
  })

  test('a process that cannot read the stored keys still starts, and every clean start asks the database', async () => {
    const unreachable = new Store('postgres://postgres@127.0.0.1:1/none', silent, 1)
    const sessions = new Sessions(unreachable, silent)
    try {
      await sessions.start()
      assert.equal(sessions.mayExist('d/never'), true)
      await assert.rejects(sessions.discard('d/never'))
    } finally {
      await sessions.stop()
      await unreachable.stop()
    }
  })

  test('while its LISTEN connection is down every key may have a session, until the stored keys are read again', async () => {
    const here = await freshStore()
    const other = await freshStore(here.url)
    const sessions = new Sessions(here, silent)
    try {
      await sessions.start()
      assert.equal(sessions.mayExist('d/never'), false)
      const pid = await waitFor(async () => {
        const r = await other.pool.query(
          `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1`,
          [`LISTEN ${other.sessions.channel}`],
        )
        return r.rows[0]?.pid as number | undefined
      })
      await other.pool.query('SELECT pg_terminate_backend($1)', [pid])
      await waitFor(() => sessions.mayExist('d/never'), 20_000, 'every key unknown')
      // Saved while this process may not be listening: found when it reads the stored keys again.
      await other.sessions.save('d/meanwhile', 'd', {}, 60)
      await waitFor(() => !sessions.mayExist('d/never'), 20_000, 'listening again')
      assert.equal(sessions.mayExist('d/meanwhile'), true)
    } finally {
      await sessions.stop()
      await here.stop()
      await other.stop()
    }
  })
})
