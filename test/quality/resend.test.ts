import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { type Device, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { openClient } from '../gateway/mqtt/helpers.js'

interface Received {
  id: string
  name: string
  params: Record<string, unknown>
}

/** MQTT.js as a device: subscribed to its commands, collecting them; publishes readings by seq. */
async function mqttDevice(p: Platform, dev: Device) {
  const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, 4, dev)
  const commands: Received[] = []
  client.on('message', (_t, payload) => commands.push(JSON.parse(String(payload))))
  await client.subscribeAsync(`devices/${dev.id}/commands`, { qos: 1 })
  const reading = (seq: number) => ({ msgId: `${dev.id}-${seq}`, ts: 1_795_000_000_000 + seq, seq, v: seq })
  const publish = (seqs: number[]) =>
    client.publishAsync(`devices/${dev.id}/telemetry`, JSON.stringify(seqs.map(reading)), { qos: 1 })
  return { client, commands, publish }
}

describe('resend over MQTT: a device that can resend is asked for the range its sequence misses', () => {
  let p: Platform
  const clients: MqttClient[] = []
  before(async () => {
    p = await startPlatform()
  })
  after(async () => {
    for (const c of clients) c.end(true)
    await p.stop()
  })

  const gaps = async (id: string) => {
    const r = await p.req('GET', `/api/v1/devices/${id}/gaps?status=all`)
    assert.equal(r.status, 200)
    return r.body.gaps as Array<{ from: number; to: number; missing: number[][]; status: string }>
  }
  /**
   * Publishes `before`, waits until it is stored, then `after`: the ingest writes two batches at once, and the
   * gap's bounds as found depend on their order (judged the other way round, 4..6 is found as 2..6, shrunk).
   */
  const sendAround = async (
    d: Awaited<ReturnType<typeof mqttDevice>>,
    dev: Device,
    before: number[],
    after: number[],
  ) => {
    await d.publish(before)
    await waitFor(async () => {
      const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=seq&limit=100`)
      return r.body.seq.length === before.length
    })
    await d.publish(after)
  }
  const commands = async (id: string) => {
    const r = await p.req('GET', `/api/v1/devices/${id}/commands`)
    assert.equal(r.status, 200)
    return r.body.items as Array<{
      id: string
      name: string
      params: unknown
      status: string
      result: unknown
    }>
  }

  test('skipping seq 4..6 brings a resend command {from: 4, to: 6} on devices/<id>/commands; republished, the gap closes and the command is replied', async () => {
    const dev = await p.createDevice('can-resend', { attributes: { resend: true } })
    const d = await mqttDevice(p, dev)
    clients.push(d.client)
    // Its link lost 4..6; the device kept them.
    await sendAround(d, dev, [1, 2, 3], [7, 8])
    await waitFor(() => d.commands.length > 0, 20_000, 'the resend command')
    const [cmd] = d.commands
    assert.equal(cmd.name, 'resend')
    assert.deepEqual(cmd.params, { from: 4, to: 6 })
    assert.deepEqual(
      (await gaps(dev.id)).map((g) => [g.from, g.to, g.status]),
      [[4, 6, 'open']],
    )

    // The device republishes the range with the msgIds it had, and answers.
    await d.publish([4, 5, 6])
    await d.client.publishAsync(
      `devices/${dev.id}/commands/ack`,
      JSON.stringify({ id: cmd.id, status: 'ok', result: { resent: 3 } }),
      { qos: 1 },
    )
    await waitFor(async () => (await gaps(dev.id))[0].status === 'closed', 20_000, 'the gap to close')
    assert.deepEqual(
      (await gaps(dev.id)).map((g) => [g.from, g.to, g.missing, g.status]),
      [[4, 6, [], 'closed']],
    )
    await waitFor(
      async () => (await commands(dev.id))[0].status === 'replied',
      20_000,
      'the command to be replied',
    )
    const [row] = await commands(dev.id)
    assert.equal(row.id, cmd.id)
    assert.deepEqual(row.result, { resent: 3 })
    const stored = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=seq&limit=100`)
    assert.deepEqual(
      stored.body.seq.map((x: { value: number }) => x.value).sort((a: number, b: number) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8],
    )
    assert.equal(d.commands.length, 1, 'one command for the gap')
  })

  test('a device without the capability gets no command for its gap', async () => {
    const dev = await p.createDevice('cannot-resend', { attributes: { model: 'x1' } })
    const d = await mqttDevice(p, dev)
    clients.push(d.client)
    await sendAround(d, dev, [1, 2, 3], [7, 8])
    // The command would be queued in the transaction that stores the gap: once the gap shows, it would too.
    await waitFor(async () => (await gaps(dev.id)).length === 1, 20_000, 'the gap')
    assert.deepEqual(await commands(dev.id), [])
    // And nothing is on its way over MQTT: a command sent now is the first the device gets.
    const r = await p.req('POST', `/api/v1/devices/${dev.id}/commands`, { name: 'marker' })
    assert.equal(r.status, 201)
    await waitFor(() => d.commands.length > 0, 20_000, 'the marker command')
    assert.deepEqual(
      d.commands.map((c) => c.name),
      ['marker'],
    )
  })
})
