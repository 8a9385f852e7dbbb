/**
 * `npm run bench:connections`: memory per held MQTT connection, iotcore beside Mosquitto in one run, for the
 * gateway process alone and for the whole process tree that serves the connections (iotcore's process with
 * its threads, anything it spawns, and every PostgreSQL process).
 *
 * A holder process (not the server's: a process cannot hold both ends of 10,000 sockets under the open-file
 * limit) opens BENCH_CONNECTIONS_HELD raw TCP connections, each sending an authenticated MQTT 3.1.1 CONNECT,
 * and waits for every CONNACK. Memory is read from /proc before and after; the difference divided by the
 * connections is the cost of one. The product target is 8 KiB or less for iotcore's whole tree.
 *
 * The tree is measured in PSS (proportional set size, `Pss:` of /proc/<pid>/smaps_rollup): a page shared by
 * k processes counts 1/k in each, so the sum over the tree counts PostgreSQL's shared buffers, and the code
 * pages its processes share, once. Summed RSS would count them once per process that touched them: a new
 * backend that reads a few shared pages would look as if it had copied them. RSS is printed beside it.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import mqttPacket from 'mqtt-packet'
import pino from 'pino'
import { EmbeddedDatabase } from '../src/store/embedded.js'
import { freePort, sleep } from './common.js'

const N = Number(process.env.BENCH_CONNECTIONS_HELD ?? 10_000)
const TARGET_KIB = 8
const ROOT = new URL('../../', import.meta.url).pathname
/** Another built checkout of iotcore to measure instead of this one (a base commit, for side-by-side runs). */
const IOTCORE_ROOT = resolve(process.env.BENCH_IOTCORE_ROOT || ROOT)
const ADMIN = 'bench-admin-token-0123456789'
const MOSQUITTO = '/usr/sbin/mosquitto'
/** After the last CONNACK, before reading memory: what the connect burst left in flight settles. */
const SETTLE_MS = 3000

/** Resident memory of a set of processes, in KiB. */
interface Mem {
  rss: number
  pss: number
  processes: number
}

const NONE: Mem = { rss: 0, pss: 0, processes: 0 }

function add(a: Mem, b: Mem): Mem {
  return { rss: a.rss + b.rss, pss: a.pss + b.pss, processes: a.processes + b.processes }
}

/** One process's RSS and PSS (all its threads share them); nothing if it is gone. */
function memOf(pid: number): Mem {
  try {
    const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const rss = /^Rss:\s+(\d+) kB/m.exec(s)
    const pss = /^Pss:\s+(\d+) kB/m.exec(s)
    if (!rss || !pss) return NONE
    return { rss: Number(rss[1]), pss: Number(pss[1]), processes: 1 }
  } catch {
    return NONE
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The field after the command name (which may hold spaces, hence the last ')').
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return undefined
  }
}

/** These processes and all their descendants, as they are now. */
function tree(roots: number[]): number[] {
  const byParent = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const ppid = parentOf(Number(name))
    if (ppid === undefined) continue
    let list = byParent.get(ppid)
    if (!list) byParent.set(ppid, (list = []))
    list.push(Number(name))
  }
  const seen = new Set<number>()
  const stack = [...roots]
  while (stack.length > 0) {
    const p = stack.pop()!
    if (seen.has(p)) continue
    seen.add(p)
    stack.push(...(byParent.get(p) ?? []))
  }
  return [...seen]
}

const memOfTree = (roots: number[]) => tree(roots).reduce((sum, pid) => add(sum, memOf(pid)), NONE)

/** The server, and the roots of the tree that serves it (itself, and its database's postmaster if any). */
interface Subject {
  name: string
  pid: number
  /** PostgreSQL's postmaster (the bench's, shared by nothing else): its backends are part of the cost. */
  postgres?: number
}

interface Sample {
  server: Mem
  postgres: Mem
  tree: Mem
}

function sample(s: Subject): Sample {
  const server = memOf(s.pid)
  const postgres = s.postgres === undefined ? NONE : memOfTree([s.postgres])
  return { server, postgres, tree: memOfTree(s.postgres === undefined ? [s.pid] : [s.pid, s.postgres]) }
}

/** The holder: connects N sockets when told to, reports, then holds them until told to stop. */
async function holder(): Promise<void> {
  const port = Number(process.env.HOLD_PORT)
  const username = process.env.HOLD_USER || undefined
  const password = process.env.HOLD_PASS ? Buffer.from(process.env.HOLD_PASS) : undefined
  const sockets: ReturnType<typeof connect>[] = []
  let acked = 0
  let failed = 0
  const BATCH = 200
  // Started, but nothing connected yet: the "before" reading is taken now, so that this process (which shares
  // Node's code pages with the server) is already counted in the PSS split of those pages.
  await new Promise<void>((r) => {
    process.once('message', () => r())
    process.send!({ ready: true })
  })
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
  process.once('message', () => {
    for (const s of sockets) s.destroy()
    process.exit(0)
  })
}

const kib = (n: number) => n.toFixed(2)

interface Result {
  name: string
  held: number
  failed: number
  before: Sample
  after: Sample
  /** KiB per held connection */
  perConnection: { serverRss: number; serverPss: number; treePss: number; treeRss: number }
}

async function measure(s: Subject, port: number, user?: string, pass?: string): Promise<Result> {
  const child = fork(new URL(import.meta.url).pathname, ['hold'], {
    env: { ...process.env, HOLD_PORT: String(port), HOLD_USER: user ?? '', HOLD_PASS: pass ?? '' },
  })
  await new Promise((r) => child.once('message', r))
  await sleep(1500)
  const before = sample(s)
  child.send('go')
  const result = await new Promise<{ acked: number; failed: number }>((resolve) =>
    child.once('message', resolve as never),
  )
  await sleep(SETTLE_MS)
  const after = sample(s)
  child.send('stop')
  await new Promise((r) => child.once('exit', r))
  const n = Math.max(1, result.acked)
  const per = (a: number, b: number) => (b - a) / n
  const r: Result = {
    name: s.name,
    held: result.acked,
    failed: result.failed,
    before,
    after,
    perConnection: {
      serverRss: per(before.server.rss, after.server.rss),
      serverPss: per(before.server.pss, after.server.pss),
      treePss: per(before.tree.pss, after.tree.pss),
      treeRss: per(before.tree.rss, after.tree.rss),
    },
  }
  const p = r.perConnection
  console.log(`  ${s.name}: ${result.acked} held${result.failed ? `, ${result.failed} failed` : ''}`)
  console.log(
    `    server process  RSS ${before.server.rss} -> ${after.server.rss} KiB: ${kib(p.serverRss)} KiB per connection` +
      ` (PSS ${kib(p.serverPss)})`,
  )
  if (s.postgres !== undefined) {
    console.log(
      `    PostgreSQL      ${before.postgres.processes} -> ${after.postgres.processes} processes,` +
        ` PSS ${before.postgres.pss} -> ${after.postgres.pss} KiB` +
        ` (summed RSS ${before.postgres.rss} -> ${after.postgres.rss})`,
    )
  }
  console.log(
    `    whole tree      PSS ${before.tree.pss} -> ${after.tree.pss} KiB: ${kib(p.treePss)} KiB per connection` +
      ` (summed RSS would say ${kib(p.treeRss)})`,
  )
  return r
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
    if (IOTCORE_ROOT !== resolve(ROOT)) console.log(`iotcore from ${IOTCORE_ROOT}`)
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
    const m = await measure({ name: 'Mosquitto', pid: mosq.pid! }, mport)
    mosq.kill()

    const url = await db.start()
    const postmaster = Number(readFileSync(join(tmp, 'pg', 'pg', 'postmaster.pid'), 'utf8').split('\n')[0])
    const http = await freePort()
    const mqtt = await freePort()
    const iot = spawn(process.execPath, [join(IOTCORE_ROOT, 'dist/src/cli/main.js'), 'start'], {
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
    const i = await measure({ name: 'iotcore', pid: iot.pid!, postgres: postmaster }, mqtt, dev.id, dev.token)
    iot.kill('SIGTERM')
    await new Promise((res) => iot.once('exit', res))

    const p = i.perConnection
    const verdict = p.treePss <= TARGET_KIB ? 'meets' : 'MISSES'
    console.log(
      `iotcore: whole tree ${kib(p.treePss)} KiB per connection in PSS (${verdict} the ${TARGET_KIB} KiB target),` +
        ` gateway process ${kib(p.serverRss)} KiB in RSS; Mosquitto ${kib(m.perConnection.serverRss)} KiB`,
    )
    writeFileSync(
      join(ROOT, 'bench/results/connections.json'),
      JSON.stringify(
        {
          when: new Date().toISOString(),
          connections: N,
          targetKib: TARGET_KIB,
          iotcoreRoot: IOTCORE_ROOT,
          iotcore: i,
          mosquitto: m,
        },
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
