/**
 * `npm run bench:connections`: memory per held MQTT connection, iotcore beside Mosquitto in one run.
 *
 * A holder process (not the server's: a process cannot hold both ends of 10,000 sockets under the open-file
 * limit) opens BENCH_CONNECTIONS raw TCP connections, each sending an authenticated MQTT 3.1.1 CONNECT, and
 * waits for every CONNACK. The server's resident memory is read from /proc before and after; the difference
 * divided by the connections is the cost of one. The product target is 8 KiB or less for iotcore.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqttPacket from 'mqtt-packet'
import pino from 'pino'
import { EmbeddedDatabase } from '../src/store/embedded.js'
import { freePort, sleep } from './common.js'

const N = Number(process.env.BENCH_CONNECTIONS_HELD ?? 10_000)
const TARGET_KIB = 8
const ROOT = new URL('../../', import.meta.url).pathname
const ADMIN = 'bench-admin-token-0123456789'
const MOSQUITTO = '/usr/sbin/mosquitto'

function rssKib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) : Number.NaN
}

/** The holder: connects N sockets, reports, then holds them until told to stop. */
async function holder(): Promise<void> {
  const port = Number(process.env.HOLD_PORT)
  const username = process.env.HOLD_USER || undefined
  const password = process.env.HOLD_PASS ? Buffer.from(process.env.HOLD_PASS) : undefined
  const sockets: ReturnType<typeof connect>[] = []
  let acked = 0
  let failed = 0
  const BATCH = 200
  for (let i = 0; i < N; i += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, N - i) }, (_, k) => {
        return new Promise<void>((resolve) => {
          const s = connect(port, '127.0.0.1')
          sockets.push(s)
          s.on('error', () => {
            failed++
            resolve()
          })
          s.once('data', (d) => {
            if (d[0] === 0x20 && d[3] === 0) acked++
            else failed++
            resolve()
          })
          s.on('connect', () => {
            s.write(
              mqttPacket.generate({
                cmd: 'connect',
                protocolId: 'MQTT',
                protocolVersion: 4,
                clean: true,
                clientId: `hold-${i + k}`,
                keepalive: 600,
                username,
                password,
              }),
            )
          })
        })
      }),
    )
    process.stdout.write(`\r  connected ${acked}/${N}${failed ? ` (${failed} failed)` : ''}   `)
  }
  process.stdout.write('\n')
  process.send!({ acked, failed })
  process.on('message', () => {
    for (const s of sockets) s.destroy()
    process.exit(0)
  })
}

async function measure(name: string, pid: number, port: number, user?: string, pass?: string) {
  await sleep(1500)
  const before = rssKib(pid)
  const child = fork(new URL(import.meta.url).pathname, ['hold'], {
    env: { ...process.env, HOLD_PORT: String(port), HOLD_USER: user ?? '', HOLD_PASS: pass ?? '' },
  })
  const result = await new Promise<{ acked: number; failed: number }>((resolve) =>
    child.once('message', resolve as never),
  )
  await sleep(3000)
  const after = rssKib(pid)
  child.send('stop')
  await new Promise((r) => child.once('exit', r))
  const perConnection = (after - before) / Math.max(1, result.acked)
  console.log(
    `  ${name}: ${result.acked} held, RSS ${before} -> ${after} KiB: ${perConnection.toFixed(2)} KiB per connection`,
  )
  return {
    name,
    held: result.acked,
    failed: result.failed,
    beforeKib: before,
    afterKib: after,
    perConnectionKib: perConnection,
  }
}

async function waitHttp(url: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`)
    try {
      if ((await fetch(url)).ok) return
    } catch {}
    await sleep(100)
  }
  throw new Error(`${url} did not answer`)
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'iotcore-bench-conn-'))
  // PostgreSQL runs as user postgres when we are root: it must be able to pass through.
  chmodSync(tmp, 0o711)
  const children: ChildProcess[] = []
  const db = new EmbeddedDatabase(join(tmp, 'pg'), pino({ level: 'warn' }))
  try {
    console.log(`memory per held MQTT connection, ${N} connections`)
    // Mosquitto, for scale.
    const mport = await freePort()
    const conf = join(tmp, 'mosquitto.conf')
    writeFileSync(
      conf,
      `listener ${mport} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n`,
    )
    const mosq = spawn(MOSQUITTO, ['-c', conf], { stdio: 'ignore' })
    children.push(mosq)
    await sleep(500)
    const m = await measure('Mosquitto', mosq.pid!, mport)
    mosq.kill()

    const url = await db.start()
    const http = await freePort()
    const mqtt = await freePort()
    const iot = spawn(process.execPath, [join(ROOT, 'dist/src/cli/main.js'), 'start'], {
      env: {
        ...process.env,
        DATABASE_URL: url,
        IOTCORE_DATA_DIR: join(tmp, 'data'),
        IOTCORE_HOST: '127.0.0.1',
        IOTCORE_HTTP_PORT: String(http),
        IOTCORE_MQTT_PORT: String(mqtt),
        IOTCORE_ADMIN_TOKEN: ADMIN,
        IOTCORE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    })
    children.push(iot)
    await waitHttp(`http://127.0.0.1:${http}/healthz`, iot)
    const r = await fetch(`http://127.0.0.1:${http}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'holder' }),
    })
    const dev = (await r.json()) as { id: string; token: string }
    const i = await measure('iotcore', iot.pid!, mqtt, dev.id, dev.token)
    iot.kill('SIGTERM')
    await new Promise((res) => iot.once('exit', res))

    const verdict = i.perConnectionKib <= TARGET_KIB ? 'meets' : 'MISSES'
    console.log(
      `iotcore ${i.perConnectionKib.toFixed(2)} KiB per connection (${verdict} the ${TARGET_KIB} KiB target); Mosquitto ${m.perConnectionKib.toFixed(2)} KiB`,
    )
    writeFileSync(
      join(ROOT, 'bench/results/connections.json'),
      JSON.stringify(
        { when: new Date().toISOString(), connections: N, targetKib: TARGET_KIB, iotcore: i, mosquitto: m },
        null,
        2,
      ),
    )
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await db.stop().catch(() => {})
    rmSync(tmp, { recursive: true, force: true })
  }
}

if (process.argv[2] === 'hold') await holder()
else await main()
