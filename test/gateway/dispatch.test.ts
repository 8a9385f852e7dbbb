import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { command, sendCommand } from '../helpers/commands.js'
import { openClient } from './mqtt/helpers.js'

/** MQTT.js subscribed to the device's commands; `ids` collects the ids of the commands it receives, in order. */
async function listener(p: Platform, dev: Device, clientId?: string) {
  const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, 4, dev, clientId ? { clientId } : {})
  const ids: string[] = []
  client.on('message', (_t, payload) => ids.push(JSON.parse(String(payload)).id))
  await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
  return { client, ids }
}

/**
 * Proves that nothing more of what was sent before is still coming: a later command reaches the client, and
 * a resend of an earlier one would have been claimed (and written) before the later one even existed.
 */
async function settled(p: Platform, dev: Device, ids: string[]): Promise<string> {
  const last = await sendCommand(p, dev.id, { name: 'marker' })
  await waitFor(() => ids.includes(last.id), 20_000, 'the marker command')
  return last.id
}

describe('commands dispatcher: restarts, several gateway processes, ttl', () => {
  let p: Platform
  const clients: MqttClient[] = []
  before(async () => {
    p = await startPlatform()
  })
  after(async () => {
    for (const c of clients) c.end(true)
    await p.stop()
  })

  test('a command for an offline device waits, survives a restart of the platform, and is sent once when the device connects', async () => {
    const dev = await p.createDevice('offline')
    const cmd = await sendCommand(p, dev.id, { name: 'wake', params: { at: 'noon' } })
    const { dataDir, databaseUrl } = p
    await p.app.stop()
    p = await startPlatform({}, { dataDir, databaseUrl })
    assert.equal((await command(p, dev.id, cmd.id)).status, 'queued')

    const l = await listener(p, dev)
    clients.push(l.client)
    await waitFor(async () => (await command(p, dev.id, cmd.id)).status === 'delivered')
    const marker = await settled(p, dev, l.ids)
    assert.deepEqual(l.ids, [cmd.id, marker])
    assert.equal((await command(p, dev.id, cmd.id)).attempts, 1)
  })

  test('a command sent while the platform stops before the PUBACK goes out again after the restart', async () => {
    const dev = await p.createDevice('cut-by-stop')
    // A client that takes the command and never acknowledges it: MQTT.js (5, which alone lets acks be held
    // back) holding its PUBACK.
    const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, 5, dev, {
      customHandleAcks: () => {},
    })
    await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
    const cmd = await sendCommand(p, dev.id, { name: 'pending' })
    await waitFor(async () => (await command(p, dev.id, cmd.id)).status === 'sent')
    const { dataDir, databaseUrl } = p
    await p.app.stop()
    client.end(true)
    p = await startPlatform({}, { dataDir, databaseUrl })
    const back = await command(p, dev.id, cmd.id)
    assert.equal(back.status, 'queued')
    assert.match(back.error, /closed before the device took it|stopped before the device took it/)

    const l = await listener(p, dev)
    clients.push(l.client)
    await waitFor(async () => (await command(p, dev.id, cmd.id)).status === 'delivered')
    assert.equal((await command(p, dev.id, cmd.id)).attempts, 2)
  })

  test('two gateway processes on one database: the process holding the device sends its command, exactly once, whichever API took it', async () => {
    const q = await startPlatform({}, { databaseUrl: p.databaseUrl })
    try {
      for (const [api, holder] of [
        [p, q],
        [q, p],
      ]) {
        const dev = await api.createDevice('elsewhere')
        const l = await listener(holder, dev)
        clients.push(l.client)
        const cmd = await sendCommand(api, dev.id, { name: 'reach-me' })
        await waitFor(async () => (await command(api, dev.id, cmd.id)).status === 'delivered')
        const marker = await settled(api, dev, l.ids)
        assert.deepEqual(l.ids, [cmd.id, marker])
      }

      // Connected to both at once (two client ids): each command goes out on one of the two, never both.
      const dev = await p.createDevice('both')
      const here = await listener(p, dev, 'here')
      const there = await listener(q, dev, 'there')
      clients.push(here.client, there.client)
      const sent: string[] = []
      for (let i = 0; i < 20; i++) sent.push((await sendCommand(i % 2 ? p : q, dev.id, { name: `n${i}` })).id)
      for (const id of sent) await waitFor(async () => (await command(p, dev.id, id)).status === 'delivered')
      const received = [...here.ids, ...there.ids].sort()
      assert.deepEqual(received, [...sent].sort())
      for (const id of sent) assert.equal((await command(p, dev.id, id)).attempts, 1)
    } finally {
      await q.stop()
    }
  })

  test('a command not sent within its ttl expires, and is never sent after', async () => {
    const dev = await p.createDevice('ttl')
    const short = await sendCommand(p, dev.id, { name: 'soon', ttl: 1 })
    assert.equal(Date.parse(short.expiresAt) - Date.parse(short.createdAt), 1000)
    await waitFor(async () => (await command(p, dev.id, short.id)).status === 'expired')
    const l = await listener(p, dev)
    clients.push(l.client)
    const marker = await settled(p, dev, l.ids)
    assert.deepEqual(l.ids, [marker])
    assert.equal((await command(p, dev.id, short.id)).attempts, 0)
  })

  test('a command left sent by a gateway process that is gone is queued again and sent', async () => {
    const dev = await p.createDevice('orphan')
    const cmd = await sendCommand(p, dev.id, { name: 'orphaned' })
    // As a process that claimed it and was killed would leave it (no heartbeat of it in services).
    await p.app.store.pool.query(
      `UPDATE commands SET status = 'sent', sent_by = 'killed-process', attempts = 1, sent_at = now()
       WHERE id = $1`,
      [cmd.id],
    )
    const l = await listener(p, dev)
    clients.push(l.client)
    await waitFor(() => l.ids.includes(cmd.id), 20_000, 'the orphaned command')
    const c = await waitFor(async () => {
      const x = await command(p, dev.id, cmd.id)
      return x.status === 'delivered' && x
    })
    assert.equal(c.attempts, 2)
  })
})
