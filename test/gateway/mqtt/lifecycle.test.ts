import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { IDisconnectPacket, MqttClient } from 'mqtt'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { type Device, LIVENESS_MS } from '../../helpers/mqtt-raw.js'
import { MqttSuite, openClient, publish, series } from './helpers.js'

const telemetry = (d: Device) => `devices/${d.id}/telemetry`

/** How the server ended a client's connection: the v5 DISCONNECT it sent, if any, once the socket closed. */
function cut(client: MqttClient): Promise<IDisconnectPacket | undefined> {
  return new Promise((resolve) => {
    let packet: IDisconnectPacket | undefined
    client.on('disconnect', (p) => (packet = p))
    client.once('close', () => resolve(packet))
  })
}

/** An MQTT.js client connected to `p`'s MQTT port; `gone()` waits for the server to cut it, with a bound. */
async function connected(p: Platform, version: 4 | 5, dev: Device, clientId: string) {
  const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, version, dev, { clientId })
  const closed = cut(client)
  const gone = () => {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the server did not cut ${clientId}`)), LIVENESS_MS)
    })
    return Promise.race([closed, late]).finally(() => clearTimeout(timer))
  }
  return { client, gone }
}

/** The CONNACK code of a connect with these credentials that is refused, or 0 if it was accepted. */
async function refusal(p: Platform, version: 4 | 5, dev: Device): Promise<number> {
  try {
    const { client } = await openClient(`mqtt://127.0.0.1:${p.mqttPort}`, version, dev)
    client.end(true)
    return 0
  } catch (err) {
    return (err as { code?: number }).code ?? -1
  }
}

const NOT_AUTHORIZED = 0x87
/** CONNACK: v5 0x86 Bad User Name or Password, v3.1.1 return code 4 (the same). */
const BAD_CREDENTIALS = { 4: 4, 5: 0x86 } as const

describe('device lifecycle over MQTT: deleting a device or rotating its token cuts its connections', () => {
  const mq = new MqttSuite()

  for (const data of ['keep', 'delete'] as const) {
    test(`DELETE with data=${data}: MQTT 5 gets DISCONNECT 0x87 with a reason, 3.1.1 is closed, and neither can connect again`, async () => {
      const p = mq.p
      const dev = await p.createDevice(`cut-${data}`)
      const v5 = await connected(p, 5, dev, `${data}-v5`)
      const v4 = await connected(p, 4, dev, `${data}-v4`)
      assert.equal(await publish(v5.client, telemetry(dev), '{"msgId":"before","speed":7}', 1), undefined)
      await waitFor(async () => (await series(p, dev.id, 'speed')).length === 1, 20_000, 'the reading')

      assert.equal((await p.req('DELETE', `/api/v1/devices/${dev.id}?data=${data}`)).status, 204)
      const disconnect = await v5.gone()
      assert.equal(disconnect?.reasonCode, NOT_AUTHORIZED)
      assert.match(String(disconnect?.properties?.reasonString), /deleted/)
      assert.equal(await v4.gone(), undefined, 'v3.1.1 has no server DISCONNECT: the connection is closed')

      assert.equal(await refusal(p, 5, dev), BAD_CREDENTIALS[5])
      assert.equal(await refusal(p, 4, dev), BAD_CREDENTIALS[4])
      if (data === 'keep') {
        assert.deepEqual(
          (await series(p, dev.id, 'speed')).map((x) => x.value),
          [7],
          'a retired device keeps its telemetry',
        )
      } else {
        assert.equal((await p.req('GET', `/api/v1/devices/${dev.id}`)).status, 404)
      }
    })
  }

  test('a rotated token: connections made with the old one are cut (0x87), the new one connects and publishes, the old one is refused', async () => {
    const p = mq.p
    const dev = await p.createDevice('rotate')
    const old5 = await connected(p, 5, dev, 'rot-v5')
    const old4 = await connected(p, 4, dev, 'rot-v4')
    const r = await p.req('POST', `/api/v1/devices/${dev.id}/token`)
    assert.equal(r.status, 200)
    const fresh = { id: dev.id, token: r.body.token as string }

    const disconnect = await old5.gone()
    assert.equal(disconnect?.reasonCode, NOT_AUTHORIZED)
    assert.match(String(disconnect?.properties?.reasonString), /token was rotated/)
    assert.equal(await old4.gone(), undefined)

    assert.equal(await refusal(p, 5, dev), BAD_CREDENTIALS[5])
    assert.equal(await refusal(p, 4, dev), BAD_CREDENTIALS[4])
    const made: Array<Awaited<ReturnType<typeof connected>>> = []
    for (const version of [4, 5] as const) {
      const c = await connected(p, version, fresh, `rot-new-${version}`)
      made.push(c)
      const payload = `{"msgId":"new-${version}","speed":${version}}`
      assert.equal(await publish(c.client, telemetry(dev), payload, 1), undefined)
    }
    await waitFor(async () => (await series(p, dev.id, 'speed')).length === 2, 20_000, 'both readings')
    assert.equal((await p.postTelemetry(dev, '{"speed":1}')).status, 401, 'HTTP ingest refuses the old token')

    // A second rotation cuts the connections of the first new token; one made with the newest stays.
    const newer = await p.req('POST', `/api/v1/devices/${dev.id}/token`)
    assert.equal(await made[0].gone(), undefined)
    assert.equal((await made[1].gone())?.reasonCode, NOT_AUTHORIZED)
    const newest = await connected(p, 5, { id: dev.id, token: newer.body.token }, 'rot-newest')
    assert.equal(await publish(newest.client, telemetry(dev), '{"msgId":"newest","speed":9}', 1), undefined)
    await waitFor(async () => (await series(p, dev.id, 'speed')).length === 3, 20_000, 'the third reading')
    newest.client.end(true)
  })
})

describe('device lifecycle across processes: every gateway process cuts the connections', () => {
  let a: Platform
  let b: Platform
  before(async () => {
    a = await startPlatform()
    // A second process on the same database: a gateway of its own, hearing changes through LISTEN/NOTIFY.
    b = await startPlatform({ IOTCORE_ROLES: 'gateway,ingest' }, { databaseUrl: a.databaseUrl })
  })
  after(async () => {
    await b?.stop()
    await a?.stop()
  })

  test('a device deleted through one process is cut from the MQTT gateway of another; a rotated token too, and HTTP ingest there refuses it', async () => {
    const gone = await a.createDevice('elsewhere-deleted')
    const onB = await connected(b, 5, gone, 'b-deleted')
    assert.equal((await a.req('DELETE', `/api/v1/devices/${gone.id}`)).status, 204)
    assert.equal((await onB.gone())?.reasonCode, NOT_AUTHORIZED)
    assert.equal(await refusal(b, 5, gone), BAD_CREDENTIALS[5])

    const rotated = await a.createDevice('elsewhere-rotated')
    const v4OnB = await connected(b, 4, rotated, 'b-rotated')
    assert.equal((await a.req('POST', `/api/v1/devices/${rotated.id}/token`)).status, 200)
    assert.equal(await v4OnB.gone(), undefined)
    assert.equal((await b.postTelemetry(rotated, '{"speed":1}')).status, 401)
  })
})
