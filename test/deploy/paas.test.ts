import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { Rabbit, freePort, workdir } from '../chaos/harness.js'
import { ADMIN_TOKEN, freshDatabase, waitFor } from '../helpers/index.js'
import { ShellProcess, cleanEnv, readProcfile, ready, root } from './processes.js'

const run = promisify(execFile)

describe('the Procfile on a PaaS: release, web, worker and clock as separate processes', () => {
  const w = workdir('iotcore-paas-')
  let rabbit: Rabbit | undefined
  let amqpUrl = ''
  let databaseUrl = ''
  const procs: ShellProcess[] = []
  before(async () => {
    rabbit = new Rabbit(join(w.dir, 'rabbit'), await freePort())
    ;[amqpUrl, databaseUrl] = await Promise.all([rabbit.start(), freshDatabase()])
  })
  after(async () => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')))
    await rabbit?.stop()
    w.cleanup()
  })

  test('the release step migrates; a reading sent over MQTT-over-WebSocket to web on $PORT is stored by worker; clock leads the organizer', async () => {
    const procfile = readProcfile()
    assert.deepEqual(Object.keys(procfile).sort(), ['clock', 'release', 'web', 'worker'])
    const port = await freePort()
    // What a PaaS gives every dyno: the add-ons' URLs (CloudAMQP's name for the broker, not AMQP_URL), a
    // config var for the admin token, and PORT for web alone; each dyno has its own temporary disk.
    const env = (name: string, extra: Record<string, string> = {}) =>
      cleanEnv({
        DATABASE_URL: databaseUrl,
        CLOUDAMQP_URL: amqpUrl,
        IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
        IOTCORE_DATA_DIR: join(w.dir, name),
        IOTCORE_HOST: '127.0.0.1',
        IOTCORE_LOG_LEVEL: 'warn',
        IOTCORE_CHECK_INTERVAL: '1',
        ...extra,
      })

    const release = () =>
      run('bash', ['-c', procfile.release], { cwd: root, env: env('release') as NodeJS.ProcessEnv })
    assert.match((await release()).stdout, /^applied migrations 1, 2/)
    // Every deploy runs it again: a no-op once the schema is current.
    assert.match((await release()).stdout, /up to date/)

    const web = new ShellProcess('web', procfile.web, env('web', { PORT: String(port) }))
    const worker = new ShellProcess('worker', procfile.worker, env('worker'))
    const clock = new ShellProcess('clock', procfile.clock, env('clock'))
    procs.push(web, worker, clock)
    const base = `http://127.0.0.1:${port}`
    await web.until(() => ready(`${base}/readyz`), 120_000, 'web ready on $PORT')
    const banner = await web.until(
      () => /iotcore is running[\s\S]*admin token/.exec(web.out())?.[0],
      10_000,
      'banner',
    )
    assert.match(banner, /MQTT\s+over WebSocket only: ws:\/\/[^/]+\/mqtt/, 'no MQTT TCP listener on a PaaS')

    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }
    const created = await fetch(`${base}/api/v1/devices`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ name: 'paas-truck' }),
    })
    assert.equal(created.status, 201)
    const dev = (await created.json()) as { id: string; token: string }
    const client = await mqtt.connectAsync(`ws://127.0.0.1:${port}/mqtt`, {
      username: dev.id,
      password: dev.token,
      protocolVersion: 5,
    })
    await client.publishAsync(
      `devices/${dev.id}/telemetry`,
      JSON.stringify({ ts: 1_732_330_000_123, msgId: 'paas-1', lat: 37.98, lon: 23.72, speed: 52.3 }),
      { qos: 1 },
    )
    await client.endAsync()
    const stored = await worker.until(
      async () => {
        const r = await fetch(`${base}/api/v1/devices/${dev.id}/telemetry?keys=speed`, { headers: admin })
        const body = (await r.json()) as { speed?: unknown[] }
        return body.speed?.length ? body.speed : undefined
      },
      60_000,
      'the reading stored',
    )
    assert.deepEqual(stored, [{ ts: 1_732_330_000_123, value: 52.3 }])

    // Each process beats into `services` with its roles: three processes, one role set each.
    const services = await waitFor(
      async () => {
        const r = await fetch(`${base}/api/v1/services`, { headers: admin })
        const live = (
          (await r.json()) as { services: Array<{ roles: string[]; stoppedAt: string | null }> }
        ).services
          .filter((s) => !s.stoppedAt)
          .map((s) => s.roles.join(','))
          .sort()
        return live.length === 3 && live
      },
      30_000,
      'three services beating',
    )
    assert.deepEqual(services, ['api,gateway', 'ingest', 'organizer'])

    // A PaaS stops a dyno with SIGTERM: each role shuts down cleanly.
    assert.deepEqual(await Promise.all([web.stop(), worker.stop(), clock.stop()]), [0, 0, 0])
  })
})
