import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { GiveUp, waitFor } from '../helpers/index.js'
import {
  ADMIN,
  Proc,
  ackedShare,
  assertAllStoredOnce,
  createDevices,
  freePort,
  ingestWorkers,
  say,
  startBackends,
  startLoad,
  storedAtLeast,
  within,
  workdir,
} from './harness.js'

const MESSAGES = Number(process.env.CHAOS_HAPROXY_MESSAGES ?? 60_000)
// Slower than the other chaos runs, so the load outlasts two gateway restarts on a busy machine.
const RATE = Number(process.env.CHAOS_HAPROXY_RATE ?? 1_000)
const DEVICES = 20
const recipe = new URL('../../../docs/deploy/haproxy.cfg', import.meta.url).pathname

/** HAProxy on the recipe in docs/deploy, as is: the addresses come from its environment. */
function haproxy(env: Record<string, string>, logFile: string): ChildProcess {
  const child = spawn('haproxy', ['-f', recipe, '-db'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = createWriteStream(logFile, { flags: 'a' })
  child.stdout!.pipe(log)
  child.stderr!.pipe(log)
  return child
}

/** Whether HAProxy has both gateways in service in both backends, from its stats page (CSV). */
async function bothUp(statsPort: number, child: ChildProcess): Promise<boolean> {
  if (child.exitCode !== null) throw new GiveUp(`haproxy exited with ${child.exitCode}`)
  const csv = await (await fetch(`http://127.0.0.1:${statsPort}/;csv`)).text()
  const up = csv
    .split('\n')
    .map((l) => l.split(','))
    .filter((f) => /^gw\d$/.test(f[1]) && f[17] === 'UP')
  return up.length === 4
}

test(`HAProxy recipe: ${MESSAGES} QoS 1 readings through the balancer to two gateways and two ingest workers; each gateway SIGKILLed in turn and an ingest worker once, the devices reconnect through the balancer, none lost or doubled`, async () => {
  const w = workdir('iotcore-chaos-haproxy-')
  const { db, rabbit, databaseUrl, amqpUrl } = await startBackends(w)
  // Both gateways listen on the same ports, each on its own loopback address, as on two machines.
  const [gwHttp, gwMqtt, lbHttp, lbMqtt, lbStats] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ]
  const common = {
    DATABASE_URL: databaseUrl,
    AMQP_URL: amqpUrl,
    IOTCORE_ADMIN_TOKEN: ADMIN,
    IOTCORE_LOG_LEVEL: 'warn',
  }
  const hosts = ['127.0.0.1', '127.0.0.2']
  const gateways = hosts.map(
    (host, i) =>
      new Proc(
        `gateway-${i + 1}`,
        {
          ...common,
          IOTCORE_ROLES: 'api,gateway',
          IOTCORE_HOST: host,
          IOTCORE_DATA_DIR: join(w.dir, `gw${i + 1}`),
          IOTCORE_HTTP_PORT: String(gwHttp),
          IOTCORE_MQTT_PORT: String(gwMqtt),
        },
        join(w.dir, `gateway-${i + 1}.log`),
      ),
  )
  const ingest = ingestWorkers(w.dir, common)
  const lb = haproxy(
    {
      MQTT_BIND: `127.0.0.1:${lbMqtt}`,
      HTTP_BIND: `127.0.0.1:${lbHttp}`,
      STATS_BIND: `127.0.0.1:${lbStats}`,
      GW1: hosts[0],
      GW2: hosts[1],
      MQTT_PORT: String(gwMqtt),
      HTTP_PORT: String(gwHttp),
    },
    join(w.dir, 'haproxy.log'),
  )
  let load: ReturnType<typeof startLoad> | undefined
  try {
    await Promise.all(gateways.map((g, i) => g.start(gwHttp, hosts[i])))
    for (const p of ingest) await p.start()
    await waitFor(() => bothUp(lbStats, lb), 60_000, 'HAProxy to put both gateways in service')
    // The API through the balancer: devices created on either gateway, one database.
    const devices = await createDevices(lbHttp, DEVICES)
    load = startLoad(lbMqtt, devices, MESSAGES, RATE)
    const l = load
    for (const [share, i] of [
      [0.2, 0],
      [0.5, 1],
    ] as const) {
      await ackedShare(l, share)
      const before = l.acked.size
      // A kill after the last ack would prove nothing about reconnecting.
      assert.ok(before < MESSAGES - 1000, `the load still runs at the kill (${before} acked)`)
      say(`SIGKILL ${gateways[i].name} at ${before} acked`)
      await gateways[i].kill()
      // The devices it held reconnect through the balancer to the other gateway, and go on being acked.
      await waitFor(() => l.acked.size > before + 1000, 120_000, 'acks to go on through the other gateway')
      say(`${l.acked.size - before} acked through the other gateway; ${gateways[i].name} started again`)
      await gateways[i].start(gwHttp, hosts[i])
      await waitFor(() => bothUp(lbStats, lb), 60_000, 'both gateways back in service')
    }
    say(`SIGKILL ingest-1 at ${l.acked.size} acked`)
    await ingest[0].kill()
    await ingest[0].start()

    await within(load.done, 600_000, 'every reading acked')
    say('all acked; waiting for the ingest workers to store them')
    await storedAtLeast(databaseUrl, MESSAGES)
    await load.stop()
    await assertAllStoredOnce(databaseUrl, devices, load)
  } finally {
    await load?.stop()
    lb.kill('SIGKILL')
    await Promise.all([...gateways, ...ingest].map((p) => p.kill()))
    await rabbit.stop()
    await db.stop().catch(() => {})
    w.cleanup()
  }
})
