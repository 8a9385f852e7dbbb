import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
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
