import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { chmodSync, createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt, { type MqttClient } from 'mqtt'
import pg from 'pg'
import pino from 'pino'
import { EmbeddedDatabase, freePort } from '../../src/store/embedded.js'
import { GiveUp, LISTENERS_OFF, waitFor } from '../helpers/index.js'

export { freePort }

const run = promisify(execFile)
const root = new URL('../../../', import.meta.url).pathname
const main = join(root, 'dist/src/cli/main.js')
const rabbitScript = join(root, 'scripts/rabbitmq.sh')
export const ADMIN = 'chaos-admin-token-0123456789'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const t0 = Date.now()
function say(msg: string): void {
  process.stdout.write(`chaos +${((Date.now() - t0) / 1000).toFixed(1)}s: ${msg}\n`)
}

/** A PostgreSQL server the suite owns, on a fixed port so it can be stopped and started behind one URL. */
export class Database {
  private db: EmbeddedDatabase
  url = ''
  constructor(
    readonly dir: string,
    port: number,
  ) {
    this.db = new EmbeddedDatabase(dir, pino({ level: 'warn' }), port)
  }
  async start(): Promise<string> {
    this.url = await this.db.start()
    return this.url
  }
  stop(): Promise<void> {
    return this.db.stop()
  }
}

export class Rabbit {
  url = ''
  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}
  async start(): Promise<string> {
    this.url =
      // Past the script's own two tries of 90 s each, so the second one gets its full time. The distribution
      // port is picked free too: the default, port + 20000, is not a port for most of the ephemeral range.
      (
        await run('bash', [rabbitScript, 'start', this.dir, String(this.port), String(await freePort())], {
          timeout: 240_000,
        })
      ).stdout.trim()
    return this.url
  }
  async stop(): Promise<void> {
    await run('bash', [rabbitScript, 'stop', this.dir], { timeout: 60_000 }).catch(() => {})
  }
}

/** One `iotcore start` process, killed with SIGKILL and started again on the same ports and data dir. */
export class Proc {
  child: ChildProcess | undefined
  starts = 0
  constructor(
    readonly name: string,
    readonly env: Record<string, string>,
    readonly logFile: string,
  ) {}

  async start(httpPort?: number, host = '127.0.0.1'): Promise<void> {
    this.starts++
    const log = createWriteStream(this.logFile, { flags: 'a' })
    const child = spawn(process.execPath, [main, 'start'], {
      env: { ...process.env, ...LISTENERS_OFF, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout!.pipe(log)
    child.stderr!.pipe(log)
    this.child = child
    if (httpPort) {
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new GiveUp(`it exited with ${child.exitCode}`)
          return (await fetch(`http://${host}:${httpPort}/healthz`)).ok
        },
        120_000,
        `${this.name} to start (see ${this.logFile})`,
      )
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      child.once('exit', () => resolve())
      child.kill(signal)
    })
  }
}

export interface Load {
  total: number
  published: number
  acked: Set<string>
  done: Promise<void>
  stop(): Promise<void>
}

/**
 * Real MQTT clients (MQTT.js, QoS 1) sending `total` readings with unique msgIds at about `rate` per second,
 * reconnecting through every outage. A reading counts as acked when its PUBACK arrives; one whose publish
 * fails is sent again until it is acked, as a device would.
 */
export function startLoad(
  mqttPort: number,
  devices: Array<{ id: string; token: string }>,
  total: number,
  rate: number,
): Load {
  const acked = new Set<string>()
  const clients: MqttClient[] = []
  const queues: string[][] = devices.map(() => [])
  for (let i = 0; i < total; i++) queues[i % devices.length].push(`m${i}`)
  const inflight = new Array(devices.length).fill(0)
  const WINDOW = 20
  let published = 0
  let resolveDone!: () => void
  const done = new Promise<void>((r) => (resolveDone = r))
  devices.forEach((d, i) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
      username: d.id,
      password: d.token,
      clientId: `chaos-${i}`,
      protocolVersion: i % 2 === 0 ? 4 : 5,
      reconnectPeriod: 250,
      connectTimeout: 5000,
      keepalive: 10,
    })
    c.on('error', () => {})
    clients.push(c)
  })
  const seen = new Set<string>()
  let budget = 0
  const tick = setInterval(() => {
    budget += rate / 50
    for (let i = 0; i < devices.length && budget >= 1; i++) {
      const c = clients[i]
      if (!c.connected) continue
      while (budget >= 1 && inflight[i] < WINDOW && queues[i].length > 0) {
        const msgId = queues[i].shift()!
        budget--
        inflight[i]++
        if (!seen.has(msgId)) {
          seen.add(msgId)
          published++
        }
        const n = Number(msgId.slice(1))
        const body = JSON.stringify({
          msgId,
          ts: 1_732_330_000_000 + n,
          lat: 37.9 + (n % 100) / 1000,
          lon: 23.7,
          speed: n % 120,
          n,
        })
        c.publish(`devices/${devices[i].id}/telemetry`, body, { qos: 1 }, (err) => {
          inflight[i]--
          if (err) queues[i].push(msgId)
          else acked.add(msgId)
          if (acked.size === total) resolveDone()
        })
      }
    }
    if (budget > rate) budget = rate
  }, 20)
  return {
    total,
    get published() {
      return published
    },
    acked,
    done,
    async stop() {
      clearInterval(tick)
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})))
    },
  }
}

/**
 * PostgreSQL and RabbitMQ for a run, in `w`'s directory, both started. If the broker does not start, both are
 * stopped and `w` removed before the error is thrown: nothing else has started yet, and a PostgreSQL child left
 * running would keep the suite alive for good.
 */
export async function startBackends(w: {
  dir: string
  cleanup(): void
}): Promise<{ db: Database; rabbit: Rabbit; databaseUrl: string; amqpUrl: string }> {
  const db = new Database(join(w.dir, 'pgdata'), await freePort())
  const rabbit = new Rabbit(join(w.dir, 'rabbit'), await freePort())
  const databaseUrl = await db.start()
  try {
    return { db, rabbit, databaseUrl, amqpUrl: await rabbit.start() }
  } catch (err) {
    await rabbit.stop()
    await db.stop().catch(() => {})
    w.cleanup()
    throw err
  }
}

/** Two ingest-only processes on the broker, each with its own data dir and log; `common`: the run's env. */
export function ingestWorkers(dir: string, common: Record<string, string>): Proc[] {
  return [1, 2].map(
    (i) =>
      new Proc(
        `ingest-${i}`,
        {
          ...common,
          IOTCORE_ROLES: 'ingest',
          IOTCORE_DATA_DIR: join(dir, `in${i}`),
          IOTCORE_HTTP_PORT: 'off',
          IOTCORE_MQTT_PORT: 'off',
        },
        join(dir, `ingest-${i}.log`),
      ),
  )
}

/** Resolves once `share` of the load's readings are acked. */
export function ackedShare(load: Load, share: number): Promise<unknown> {
  return waitFor(() => load.acked.size >= load.total * share, 300_000, `${share * 100}% acked`)
}

/** Resolves once the telemetry table holds `n` rows: every acked reading stored, by whichever ingest process. */
export async function storedAtLeast(databaseUrl: string, n: number): Promise<void> {
  const c = new pg.Client({ connectionString: databaseUrl })
  c.on('error', () => {})
  await c.connect()
  try {
    await waitFor(
      async () => (await c.query('SELECT count(*)::int AS n FROM telemetry')).rows[0].n >= n,
      300_000,
      'every acked reading stored',
    )
  } finally {
    await c.end().catch(() => {})
  }
}

export async function createDevices(
  httpPort: number,
  n: number,
): Promise<Array<{ id: string; token: string }>> {
  const out = []
  for (let i = 0; i < n; i++) {
    const r = await fetch(`http://127.0.0.1:${httpPort}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `chaos-${i}` }),
    })
    if (r.status !== 201) throw new Error(`device create: ${r.status}`)
    const b = await r.json()
    out.push({ id: b.id, token: b.token })
  }
  return out
}

/** `p`, or a failure after `ms`; the timer is cleared either way so it cannot keep the process alive. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

export interface Tally {
  published: number
  acked: number
  stored: number
  lost: number
  duplicated: number
  line: string
}

/** Prints the summary line and fails unless every reading of the load was acked and stored exactly once. */
export async function assertAllStoredOnce(
  databaseUrl: string,
  devices: Array<{ id: string }>,
  load: Load,
): Promise<void> {
  const ids = devices.map((d) => d.id)
  const t = await tally(databaseUrl, ids, load)
  console.log(t.line)
  assert.equal(t.published, load.total)
  assert.equal(t.acked, load.total)
  assert.equal(t.lost, 0)
  assert.equal(t.duplicated, 0)
  assert.equal(t.stored, load.total)
}

/** Compares what the clients were acked with what the table holds. */
export async function tally(databaseUrl: string, deviceIds: string[], load: Load): Promise<Tally> {
  const c = new pg.Client({ connectionString: databaseUrl })
  await c.connect()
  try {
    const r = await c.query(
      'SELECT msg_id FROM telemetry WHERE device_pk IN (SELECT pk FROM devices WHERE id = ANY($1))',
      [deviceIds],
    )
    const stored = r.rows.length
    const distinct = new Set(r.rows.map((x) => x.msg_id as string))
    let lost = 0
    for (const id of load.acked) if (!distinct.has(id)) lost++
    // The key is (device, msgId) and every msgId here is unique across devices, so a second row for one
    // msgId would be a reading stored twice.
    const duplicated = stored - distinct.size
    const line = `published ${load.published}, acked ${load.acked.size}, stored ${stored}, lost ${lost}, duplicated ${duplicated}`
    return { published: load.published, acked: load.acked.size, stored, lost, duplicated, line }
  } finally {
    await c.end()
  }
}

/**
 * From the database's return until nothing in the queue is older than a second: how long the ingest took to
 * notice (its backoff), then how many rows landed while the backlog drained, and how fast.
 */
export async function measureDrain(
  databaseUrl: string,
  httpPort: number,
): Promise<{ noticed: number; seconds: number; stored: number }> {
  const c = new pg.Client({ connectionString: databaseUrl })
  c.on('error', () => {})
  await c.connect()
  const count = async () => (await c.query('SELECT count(*)::int AS n FROM telemetry')).rows[0].n as number
  try {
    const t0 = Date.now()
    const c0 = await count()
    let t1 = 0
    let c1 = 0
    await waitFor(
      async () => {
        if (t1 === 0) {
          const n = await count()
          if (n === c0) return false
          t1 = Date.now()
          c1 = n
        }
        // Under live load the queue is never quite empty: the backlog is gone when nothing in it is old.
        const r = await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).json()
        return r.components.database.ok && r.components.queue.oldestAgeSeconds < 1
      },
      600_000,
      'the backlog to drain',
    )
    return { noticed: (t1 - t0) / 1000, seconds: (Date.now() - t1) / 1000, stored: (await count()) - c1 }
  } finally {
    await c.end()
  }
}

export function workdir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  // PostgreSQL (as user postgres when we are root) and RabbitMQ (as rabbitmq) keep their state inside.
  chmodSync(dir, 0o711)
  // CHAOS_KEEP=1 keeps the logs and data for a look after a run.
  return { dir, cleanup: () => process.env.CHAOS_KEEP || rmSync(dir, { recursive: true, force: true }) }
}

export { say, sleep }
