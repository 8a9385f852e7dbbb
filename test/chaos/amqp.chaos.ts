import { join } from 'node:path'
import { test } from 'node:test'
import {
  ADMIN,
  Proc,
  ackedShare,
  assertAllStoredOnce,
  createDevices,
  freePort,
  ingestWorkers,
  say,
  sleep,
  startBackends,
  startLoad,
  storedAtLeast,
  within,
  workdir,
} from './harness.js'
import { waitFor } from '../helpers/index.js'

const MESSAGES = Number(process.env.CHAOS_MESSAGES ?? 50_000)
const RATE = Number(process.env.CHAOS_RATE ?? 2_000)
const OUTAGE_SECONDS = Number(process.env.CHAOS_OUTAGE_SECONDS ?? 5)
const DEVICES = 20

test(`RabbitMQ: ${MESSAGES} QoS 1 readings, a gateway and two ingest processes, 3 SIGKILLs, a PostgreSQL outage and a broker restart, none lost or doubled`, async () => {
  const w = workdir('iotcore-chaos-amqp-')
  const { db, rabbit, databaseUrl, amqpUrl } = await startBackends(w)
  const httpPort = await freePort()
  const mqttPort = await freePort()
  const common = {
    DATABASE_URL: databaseUrl,
    AMQP_URL: amqpUrl,
    IOTCORE_HOST: '127.0.0.1',
    IOTCORE_ADMIN_TOKEN: ADMIN,
    IOTCORE_LOG_LEVEL: 'warn',
  }
  const gateway = new Proc(
    'gateway',
    {
      ...common,
      IOTCORE_ROLES: 'api,gateway',
      IOTCORE_DATA_DIR: join(w.dir, 'gw'),
      IOTCORE_HTTP_PORT: String(httpPort),
      IOTCORE_MQTT_PORT: String(mqttPort),
    },
    join(w.dir, 'gateway.log'),
  )
  const ingest = ingestWorkers(w.dir, common)
  let load: ReturnType<typeof startLoad> | undefined
  try {
    await gateway.start(httpPort)
    for (const p of ingest) await p.start()
    const devices = await createDevices(httpPort, DEVICES)
    load = startLoad(mqttPort, devices, MESSAGES, RATE)
    const l = load
    await ackedShare(l, 0.15)
    say(`SIGKILL gateway at ${l.acked.size} acked`)
    await gateway.kill()
    await gateway.start(httpPort)
    await ackedShare(l, 0.3)
    say(`SIGKILL ingest-1 at ${l.acked.size} acked`)
    await ingest[0].kill()
    await ingest[0].start()
    await ackedShare(l, 0.4)
    say(`PostgreSQL stopped at ${l.acked.size} acked`)
    await db.stop()
    const before = l.acked.size
    await sleep(OUTAGE_SECONDS * 1000)
    await waitFor(() => l.acked.size > before, 300_000, 'acks to go on during the outage')
    say(`${l.acked.size - before} acked during the outage; PostgreSQL started again`)
    await db.start()
    await ackedShare(l, 0.55)
    say(`RabbitMQ stopped at ${l.acked.size} acked`)
    await rabbit.stop()
    await sleep(2000)
    await rabbit.start()
    say(`RabbitMQ started again at ${l.acked.size} acked`)
    await ackedShare(l, 0.7)
    say(`SIGKILL gateway and ingest-2 at ${l.acked.size} acked`)
    await Promise.all([gateway.kill(), ingest[1].kill()])
    await gateway.start(httpPort)
    await ingest[1].start()

    say(`waiting for the last acks (${l.acked.size} so far)`)
    await within(load.done, 600_000, 'every reading acked')
    say('all acked; waiting for the ingest to store them')
    await storedAtLeast(databaseUrl, MESSAGES)
    await load.stop()
    await assertAllStoredOnce(databaseUrl, devices, load)
  } finally {
    await load?.stop()
    await Promise.all([gateway.kill(), ...ingest.map((p) => p.kill())])
    await rabbit.stop()
    await db.stop().catch(() => {})
    w.cleanup()
  }
})
