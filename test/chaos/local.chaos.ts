import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import {
  ADMIN,
  Database,
  Proc,
  ackedShare,
  assertAllStoredOnce,
  createDevices,
  freePort,
  measureDrain,
  say,
  sleep,
  startLoad,
  within,
  workdir,
} from './harness.js'
import { waitFor } from '../helpers/index.js'

const MESSAGES = Number(process.env.CHAOS_MESSAGES ?? 50_000)
const RATE = Number(process.env.CHAOS_RATE ?? 2_000)
const DEVICES = 20
const OUTAGE_SECONDS = Number(process.env.CHAOS_OUTAGE_SECONDS ?? 20)

test(`local queue: ${MESSAGES} QoS 1 readings through 3 SIGKILLs and a PostgreSQL outage, none lost or doubled`, async () => {
  const w = workdir('iotcore-chaos-local-')
  const db = new Database(join(w.dir, 'pgdata'), await freePort())
  const databaseUrl = await db.start()
  const httpPort = await freePort()
  const mqttPort = await freePort()
  const proc = new Proc(
    'iotcore',
    {
      DATABASE_URL: databaseUrl,
      IOTCORE_DATA_DIR: join(w.dir, 'data'),
      IOTCORE_HOST: '127.0.0.1',
      IOTCORE_HTTP_PORT: String(httpPort),
      IOTCORE_MQTT_PORT: String(mqttPort),
      IOTCORE_ADMIN_TOKEN: ADMIN,
      IOTCORE_LOG_LEVEL: 'warn',
    },
    join(w.dir, 'iotcore.log'),
  )
  let load: ReturnType<typeof startLoad> | undefined
  try {
    await proc.start(httpPort)
    const devices = await createDevices(httpPort, DEVICES)
    load = startLoad(mqttPort, devices, MESSAGES, RATE)
    const l = load
    for (const share of [0.15, 0.3, 0.45]) {
      await ackedShare(l, share)
      say(`SIGKILL at ${l.acked.size} acked`)
      await proc.kill()
      await sleep(500)
      await proc.start(httpPort)
    }
    await ackedShare(l, 0.6)
    say(`PostgreSQL stopped at ${l.acked.size} acked`)
    await db.stop()
    say('PostgreSQL is down')
    const before = l.acked.size
    await sleep(OUTAGE_SECONDS * 1000)
    await waitFor(() => l.acked.size >= before + MESSAGES * 0.05, 300_000, 'acks to go on during the outage')
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`)
    const body = await ready.json()
    assert.equal(ready.status, 503, 'readyz reports the outage')
    assert.equal(body.components.database.ok, false)
    const backlog = body.components.queue.depth
    assert.ok(backlog > 0, 'the backlog waits in the queue')
    say(
      `${l.acked.size - before} acked during the outage; queue depth ${backlog}, oldest ${body.components.queue.oldestAgeSeconds.toFixed(1)} s`,
    )
    await db.start()
    const drain = await measureDrain(databaseUrl, httpPort)
    say(
      `PostgreSQL back; the ingest resumed after ${drain.noticed.toFixed(1)} s and drained a backlog of ${backlog} in ` +
        `${drain.seconds.toFixed(1)} s: ${Math.round(drain.stored / Math.max(drain.seconds, 0.001))} rows/s stored while the live load offered ${RATE}/s`,
    )

    say(`waiting for the last acks (${l.acked.size} so far)`)
    await within(load.done, 600_000, 'every reading acked')
    say('all acked; waiting for the queue to drain')
    await waitFor(
      async () => {
        const r = await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).json()
        return r.status === 'ready' && r.components.queue.depth === 0
      },
      300_000,
      'the queue to drain',
    )
    await load.stop()
    await assertAllStoredOnce(databaseUrl, devices, load)
    assert.ok(proc.starts >= 4, 'killed at least 3 times')
  } finally {
    await load?.stop()
    await proc.kill()
    await db.stop().catch(() => {})
    w.cleanup()
  }
})
