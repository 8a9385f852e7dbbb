import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { App } from '../../../src/app.js'
import { ADMIN_TOKEN, freshDatabase, testConfig } from '../../helpers/index.js'
import { type Device, RawMqtt } from '../../helpers/mqtt-raw.js'

const KEEPALIVE_TIMEOUT = 0x8d

describe('MQTT keepalive 0 and keepalives past the maximum', () => {
  let app: App
  let dir: string
  /** The platform's log, one JSON object per line. */
  const lines: string[] = []
  const raws: RawMqtt[] = []

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'iotcore-keepalive-'))
    const config = testConfig(await freshDatabase(), dir, {
      IOTCORE_MQTT_MAX_KEEPALIVE: '1',
      IOTCORE_MQTT_IDLE_LIMIT: '8',
    })
    app = new App(config, pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }))
    await app.start()
  })
  after(async () => {
    for (const r of raws) r.destroy()
    await app.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  async function device(): Promise<Device> {
    const r = await fetch(`http://127.0.0.1:${app.httpPort}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'quiet' }),
    })
    const body = await r.json()
    return { id: body.id, token: body.token }
  }

  const connect = async (version: 4 | 5, dev: Device, keepalive: number) => {
    const c = await RawMqtt.connected(app.mqtt!.port, version, dev, { keepalive })
    raws.push(c)
    return c
  }

  test('MQTT 3.1.1 keepalive 0 is honoured up to the idle limit, a keepalive past the maximum too, and the cut is logged with why', async () => {
    const dev = await device()
    // Connected first, so that under the old rule they would be cut no later than the v5 client.
    const none = await connect(4, dev, 0)
    const long = await connect(4, dev, 5)
    const v5 = await connect(5, dev, 0)

    // MQTT 5 was told Server Keep Alive 1 s, stays silent, and is cut with 0x8D.
    await v5.waitClosed()
    const disconnect = (await v5.next().catch(() => undefined)) ?? undefined
    assert.equal(disconnect?.cmd, 'disconnect')
    assert.equal(disconnect?.reasonCode, KEEPALIVE_TIMEOUT)
    assert.equal(none.closed, false, 'keepalive 0 on 3.1.1 is not cut at 1.5 times the maximum')
    assert.equal(long.closed, false, 'a 3.1.1 keepalive past the maximum is not cut at 1.5 times the maximum')

    await none.waitClosed()
    await long.waitClosed()
    const cuts = lines.map((l) => JSON.parse(l)).filter((x) => x.msg === 'MQTT connection timed out')
    const whys = cuts.filter((x) => x.deviceId === dev.id).map((x) => x.why as string)
    assert.ok(
      whys.some((w) => /idle limit of 8 s \(IOTCORE_MQTT_IDLE_LIMIT\).*keepalive 0/.test(w)),
      `the log says why keepalive 0 was cut: ${JSON.stringify(whys)}`,
    )
    assert.ok(
      whys.some((w) => /1\.5 times the keep alive of 5 s/.test(w)),
      `and why the other was: ${JSON.stringify(whys)}`,
    )
  })
})
