/**
 * `npm run bench`: iotcore against its baselines, side by side in one run on one PostgreSQL server.
 *
 *   (a) database ceiling: plain COPY of the readings into a telemetry-shaped table with the same unique index
 *   (b) MQTT ceiling: Mosquitto acking QoS 1, nothing stored
 *   (c) the peer: Mosquitto + a Node subscriber (MQTT.js, QoS 1) inserting with unnest ... ON CONFLICT
 *   (d) iotcore, end to end: durable QoS 1 acks, then stored in PostgreSQL
 *   (e) iotcore over Teltonika: the same readings as Codec 8 Extended records from trackers over TCP, acked
 *       per packet after the durable append, beside (d) as the ratio of their stored rates
 *
 * Sizes: BENCH_MESSAGES (200000), BENCH_CONNECTIONS (100), BENCH_INFLIGHT (50), BENCH_ROUNDS (3: every
 * system measured that many times, interleaved; the report gives medians). BENCH_ONLY=a,b,c,d,e runs a subset;
 * BENCH_KEEP=1 keeps the temp dir. See bench/README.md.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { connect as netConnect } from 'node:net'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import pino from 'pino'
import { EmbeddedDatabase } from '../src/store/embedded.js'
import {
  type GeneratorConfig,
  type GeneratorConnection,
  type GeneratorMessage,
  type GeneratorResult,
  type PeerConfig,
  type TeltonikaGeneratorConfig,
  type PeerMessage,
  benchSize,
  cpuOf,
  cpuOfTree,
  envNumber,
  fleetReading,
  freePort,
  machineCpu,
  perConnection,
  sleep,
  threadSched,
} from './common.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const HERE = fileURLToPath(new URL('.', import.meta.url))
const MOSQUITTO = process.env.BENCH_MOSQUITTO || '/usr/sbin/mosquitto'
const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef'
const TARGETS = {
  stored: { first: 1.0, goal: 1.5 },
  acks: { first: 0.7, goal: 0.9 },
}
/**
 * Records per Codec 8 Extended packet in (e): 20 of the generator's records (58 bytes each) make a packet of
 * 1,175 bytes, within the 1,280 Teltonika documents as the largest, as a tracker with a backlog sends them.
 */
const TELTONIKA_RECORDS = envNumber('BENCH_TELTONIKA_RECORDS', 20)
/** Give up on a phase when nothing moves (no PUBACK, no new row) for this long. */
const STALL_MS = envNumber('BENCH_STALL_MS', 20_000)
/** Rows are counted every second; once a system's own count says 90% are in, every 50 ms. */
const COUNT_COARSE_MS = 1000
const COUNT_FINE_MS = 50
const FINE_FROM = 0.9
/** A round in which other processes took more than this share of the machine is noisy: left out of the
 * medians unless every round of that system was. */
const NOISY_SHARE = envNumber('BENCH_NOISY_PERCENT', 15) / 100

const size = benchSize()
const only = new Set((process.env.BENCH_ONLY || 'a,b,c,d,e').split(',').map((s) => s.trim().toLowerCase()))
const keep = process.env.BENCH_KEEP === '1'
const log = pino({ level: process.env.BENCH_LOG_LEVEL || 'warn' })

// ---------------------------------------------------------------- processes, and killing them all

const children = new Set<ChildProcess>()
const tmp = mkdtempSync(join(tmpdir(), 'iotcore-bench-'))
// As root, PostgreSQL runs as user postgres, which must be able to pass through to its data dir.
chmodSync(tmp, 0o711)
let database: EmbeddedDatabase | undefined
let postmasterPid: number | undefined
let shuttingDown: Promise<void> | undefined

function track<T extends ChildProcess>(child: T): T {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<{ graceful: boolean; ms: number }> {
  const t0 = performance.now()
  if (!alive(child)) return { graceful: true, ms: 0 }
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => {
    if (alive(child)) child.kill('SIGKILL')
  }, graceMs)
  await exited
  clearTimeout(timer)
  return { graceful: child.signalCode !== 'SIGKILL', ms: performance.now() - t0 }
}

function shutdown(): Promise<void> {
  shuttingDown ??= (async () => {
    await Promise.all([...children].map((c) => stopChild(c, 3000).catch(() => {})))
    await database?.stop().catch((err) => console.error('stopping PostgreSQL:', err))
    if (keep) console.log(`kept ${tmp}`)
    else rmSync(tmp, { recursive: true, force: true, maxRetries: 5 })
    cleanedUp = true
  })()
  return shuttingDown
}

let cleanedUp = false
/** Set by a signal: no new phase starts, no report is written. */
let aborted = false

// Whatever happens, no child outlives the bench, and the temp dir goes.
process.on('exit', () => {
  for (const c of children) if (alive(c)) c.kill('SIGKILL')
  if (cleanedUp) return
  if (postmasterPid) {
    try {
      process.kill(postmasterPid, 'SIGKILL')
    } catch {}
  }
  if (!keep) rmSync(tmp, { recursive: true, force: true, maxRetries: 5 })
})
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    aborted = true
    status.clear()
    console.error(`\n${sig}: stopping everything`)
    shutdown().finally(() => process.exit(130))
  })
}
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.once(event, (err: unknown) => {
    status.clear()
    console.error(`${event}:`, err)
    shutdown().finally(() => process.exit(1))
  })
}

// ---------------------------------------------------------------- progress display

class Status {
  private readonly tty = Boolean(process.stdout.isTTY)
  private shown = false
  private lastPrint = 0
  show(text: string): void {
    if (this.tty) {
      const width = Math.max(20, (process.stdout.columns || 100) - 1)
      process.stdout.write(`\r${text.slice(0, width).padEnd(width)}`)
      this.shown = true
    } else if (performance.now() - this.lastPrint > 2000) {
      this.lastPrint = performance.now()
      console.log(`  ${text}`)
    }
  }
  clear(): void {
    if (this.tty && this.shown) process.stdout.write(`\r${' '.repeat((process.stdout.columns || 100) - 1)}\r`)
    this.shown = false
  }
  line(text: string): void {
    this.clear()
    console.log(text)
  }
}
const status = new Status()

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n)
    ? '-'
    : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const pct = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x) ? '-' : `${Math.round(x * 100)}%`
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

// ---------------------------------------------------------------- PostgreSQL

let serverUrl = ''

function dbUrl(name: string): string {
  const u = new URL(serverUrl)
  u.pathname = `/${name}`
  return u.toString()
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url })
  // A lost connection fails the query in progress; the event itself must not crash the bench.
  c.on('error', () => {})
  await c.connect()
  try {
    return await fn(c)
  } finally {
    await c.end().catch(() => {})
  }
}

async function createDatabase(name: string): Promise<string> {
  await withClient(serverUrl, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${name}`)
    await c.query(`CREATE DATABASE ${name}`)
  })
  return dbUrl(name)
}

/** Dropped right after its system is measured, so its autovacuum cannot run into the next system's clock. */
async function dropDatabase(name: string): Promise<void> {
  if (keep) return
  await withClient(serverUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch(() => {})
}

/** Every system starts with the previous one's dirty pages flushed. */
async function checkpoint(): Promise<void> {
  await withClient(serverUrl, (c) => c.query('CHECKPOINT'))
}

const pgCpu = () => cpuOfTree(postmasterPid)

// ---------------------------------------------------------------- the load generator

interface Run {
  started: Promise<{ startEpoch: number }>
  done: Promise<GeneratorResult>
  acked: () => number
  pid: number | undefined
}

function startGenerator(port: number, connections: GeneratorConnection[]): Run {
  return startLoad('generator.js', {
    type: 'config',
    host: '127.0.0.1',
    port,
    connections,
    perConnection: perConnection(size),
    inflight: size.inflight,
    stallMs: STALL_MS,
    progressMs: 250,
  })
}

/** Trackers, one per IMEI, sending Codec 8 Extended packets (teltonika-generator.ts). */
function startTeltonikaGenerator(port: number, imeis: string[]): Run {
  return startLoad('teltonika-generator.js', {
    type: 'config',
    host: '127.0.0.1',
    port,
    imeis,
    perConnection: perConnection(size),
    recordsPerPacket: TELTONIKA_RECORDS,
    stallMs: STALL_MS,
    progressMs: 250,
  })
}

function startLoad(script: string, cfg: GeneratorConfig | TeltonikaGeneratorConfig): Run {
  const child = track(fork(join(HERE, script), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  let acked = 0
  let resolveStarted: (v: { startEpoch: number }) => void = () => {}
  let resolveDone: (r: GeneratorResult) => void = () => {}
  let rejectStarted: (err: Error) => void = () => {}
  let rejectDone: (err: Error) => void = () => {}
  const started = new Promise<{ startEpoch: number }>((resolve, reject) => {
    resolveStarted = resolve
    rejectStarted = reject
  })
  const done = new Promise<GeneratorResult>((resolve, reject) => {
    resolveDone = resolve
    rejectDone = reject
  })
  // Both are awaited later; a failure before that must not count as unhandled.
  started.catch(() => {})
  done.catch(() => {})
  const fail = (err: Error) => {
    rejectStarted(err)
    rejectDone(err)
  }
  child.on('message', (m: GeneratorMessage) => {
    if (m.type === 'started') resolveStarted({ startEpoch: m.startEpoch })
    else if (m.type === 'progress') acked = m.acked
    else if (m.type === 'done') {
      acked = m.acked
      if (m.startEpoch === 0) fail(new Error(`load generator: ${m.error}`))
      else resolveDone(m)
    }
  })
  child.once('exit', (code, sig) =>
    fail(new Error(`load generator exited (${code ?? sig}) before reporting`)),
  )
  child.send(cfg)
  return { started, done, acked: () => acked, pid: child.pid }
}

/** Waits for a result while showing progress; the generator gives up by itself when acks stall. */
async function runLoad(
  label: string,
  run: Run,
  display = true,
): Promise<{ result: GeneratorResult; startEpoch: number }> {
  const { startEpoch } = await run.started
  const t0 = Date.now()
  const tick = display
    ? setInterval(() => {
        status.show(`${label}  acked ${fmt(run.acked())}/${fmt(size.messages)}  ${secs(Date.now() - t0)}`)
      }, 200)
    : undefined
  try {
    const result = await run.done
    if (!result.ok) throw new Error(`load generator: ${result.error}`)
    return { result, startEpoch }
  } finally {
    clearInterval(tick)
  }
}

/**
 * Polls count(*) until all readings are in the table: every second, and every 50 ms once the system's own
 * cheaper count (`hint`) says 90% are in. Returns when the last row was seen, ms since the epoch.
 */
async function waitStored(
  label: string,
  url: string,
  startEpoch: number,
  hint: () => Promise<number> | number,
  acked: () => number,
): Promise<{ storedAt: number; count: number }> {
  return withClient(url, async (c) => {
    let count = 0
    let progress = 0
    let lastChange = Date.now()
    let lastCountAt = 0
    for (;;) {
      const now = Date.now()
      const h = await hint()
      if (h >= size.messages * FINE_FROM || now - lastCountAt >= COUNT_COARSE_MS) {
        // The count sees what was committed when the query started: that is when they were all in.
        lastCountAt = Date.now()
        const r = await c.query('SELECT count(*)::int AS n FROM telemetry')
        count = r.rows[0].n
        if (count >= size.messages) return { storedAt: lastCountAt, count }
      }
      if (Math.max(count, h) > progress) {
        progress = Math.max(count, h)
        lastChange = now
      } else if (now - lastChange > STALL_MS) {
        throw new Error(
          `only ${count} of ${size.messages} readings stored; nothing new for ${STALL_MS / 1000} s`,
        )
      }
      status.show(
        `${label}  acked ${fmt(acked())}  stored ${fmt(Math.max(count, h))}/${fmt(size.messages)}  ${secs(now - startEpoch)}`,
      )
      await sleep(COUNT_FINE_MS)
    }
  })
}

function connections(topicOf: (i: number) => string, auth?: (i: number) => [string, string]) {
  return Array.from({ length: size.connections }, (_, i): GeneratorConnection => {
    const cred = auth?.(i)
    return {
      clientId: `bench-${i}`,
      topic: topicOf(i),
      device: i,
      ...(cred ? { username: cred[0], password: cred[1] } : {}),
    }
  })
}

const deviceName = (i: number) => `dev-${String(i).padStart(4, '0')}`

// ---------------------------------------------------------------- Mosquitto

async function waitPort(port: number, child: ChildProcess, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (!alive(child)) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) at start`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect({ host: '127.0.0.1', port })
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} is not listening on ${port} after ${ms / 1000} s`)
    await sleep(50)
  }
}

async function startMosquitto(name: string): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort()
  const conf = join(tmp, `mosquitto-${name}.conf`)
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      // Unlimited: Mosquitto's default of 1,000 queued messages drops QoS 1 messages silently past it.
      'max_queued_messages 0',
      'max_inflight_messages 0',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  )
  const child = track(spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] }))
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  child.once('error', (err) => {
    stderr += err.message
  })
  try {
    await waitPort(port, child, 'mosquitto')
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${stderr}`)
  }
  return { port, child }
}

// ---------------------------------------------------------------- results and CPU accounting

/** One system's figures in one round. Absent: not measured for that system. */
interface Figures {
  acksPerSec?: number
  p50Ms?: number
  p99Ms?: number
  maxMs?: number
  /** from the first publish to the last PUBACK */
  ackSeconds?: number
  storedPerSec?: number
  /** from the first publish (or the COPY's start) until every row was counted in the table */
  storedSeconds?: number
  rows?: number
  /** share of the machine's CPU that went to processes outside the bench while the clock ran */
  otherShare?: number
  /** in a median: how many rounds it is the median of */
  rounds?: number
  /** PUBACKs for packet ids not in flight: a broker acking twice */
  unexpectedAcks?: number
  /** CPU seconds while the clock ran: generator, broker, subscriber, iotcore, postgres, bench, other */
  cpuSeconds: Record<string, number>
  /**
   * iotcore: CPU seconds of its main thread (the gateways' event loop: read, judge, append, ack) from the first
   * publish to the last ack, the cost of the ack path alone (the ingest runs on another thread)
   */
  gatewaySeconds?: number
  /** iotcore: over the same span, the seconds that thread was ready to run but waited for a core */
  gatewayWaitSeconds?: number
  /** iotcore: the CPU seconds of `cpuSeconds`, but only from the first publish to the last ack */
  ackCpuSeconds?: Record<string, number>
  iotcore?: IotcoreDetail
}

interface IotcoreDetail {
  metrics: Record<string, number>
  shutdown: { graceful: boolean; seconds: number; exitCode: number | null }
  logLines: number
  env: Record<string, string>
}

/**
 * CPU seconds from now on of the processes named, of this bench, and of everything else on the machine
 * ("other": other load on a shared machine shows up here).
 */
function cpuWindow(procs: Record<string, () => number>) {
  const start: Record<string, number> = {}
  for (const [k, f] of Object.entries(procs)) start[k] = f()
  const m0 = machineCpu()
  const b0 = process.cpuUsage()
  return (known: Record<string, number> = {}): Record<string, number> => {
    const out: Record<string, number> = { ...known }
    for (const [k, f] of Object.entries(procs)) out[k] = f() - start[k]
    const b = process.cpuUsage(b0)
    out.bench = (b.user + b.system) / 1e6
    const accounted = Object.values(out).reduce((x, y) => x + y, 0)
    out.other = Math.max(0, machineCpu() - m0 - accounted)
    return out
  }
}

function ackFigures(r: GeneratorResult): Figures {
  return {
    acksPerSec: r.acksPerSec,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    maxMs: r.maxMs,
    ackSeconds: r.seconds,
    ...(r.unexpectedAcks ? { unexpectedAcks: r.unexpectedAcks } : {}),
    cpuSeconds: {},
  }
}

// ---------------------------------------------------------------- (a) database ceiling

async function dbCeiling(): Promise<Figures> {
  const url = await createDatabase('bench_copy')
  return withClient(url, async (c) => {
    await c.query(`CREATE TABLE telemetry (
      device_id text NOT NULL, msg_id text NOT NULL, ts timestamptz NOT NULL, received_at timestamptz NOT NULL,
      values jsonb NOT NULL, PRIMARY KEY (device_id, msg_id))`)
    // The same readings, in the order the generator's connections interleave them.
    const per = perConnection(size)
    const longest = Math.max(...per)
    const receivedAt = new Date().toISOString()
    const chunks: string[] = []
    let lines: string[] = []
    for (let seq = 0; seq < longest; seq++) {
      for (let dev = 0; dev < per.length; dev++) {
        if (seq >= per[dev]) continue
        const { ts, msgId, ...values } = fleetReading(dev, seq)
        lines.push(
          `${deviceName(dev)}\t${msgId}\t${new Date(ts).toISOString()}\t${receivedAt}\t${JSON.stringify(values)}\n`,
        )
        if (lines.length === 5000) {
          chunks.push(lines.join(''))
          lines = []
        }
      }
    }
    if (lines.length) chunks.push(lines.join(''))
    await checkpoint()
    status.show('(a) PostgreSQL COPY ...')
    const cpu = cpuWindow({ postgres: pgCpu })
    const t0 = performance.now()
    await new Promise<void>((resolve, reject) => {
      const stream = c.query(copyFrom('COPY telemetry FROM STDIN'))
      stream.on('error', reject)
      stream.on('finish', () => resolve())
      ;(async () => {
        for (const chunk of chunks) if (!stream.write(chunk)) await once(stream, 'drain')
        stream.end()
      })().catch(reject)
    })
    const seconds = (performance.now() - t0) / 1000
    const cpuSeconds = cpu()
    const rows = (await c.query('SELECT count(*)::int AS n FROM telemetry')).rows[0].n
    if (rows !== size.messages) throw new Error(`COPY stored ${rows} of ${size.messages} rows`)
    return { storedPerSec: rows / seconds, storedSeconds: seconds, rows, cpuSeconds }
  })
}

// ---------------------------------------------------------------- (b) MQTT ceiling

async function mqttCeiling(): Promise<Figures> {
  const broker = await startMosquitto('ceiling')
  try {
    const run = startGenerator(
      broker.port,
      connections((i) => `devices/${deviceName(i)}/telemetry`),
    )
    await run.started
    const cpu = cpuWindow({ broker: () => cpuOf(broker.child.pid), postgres: pgCpu })
    const { result } = await runLoad('(b) Mosquitto', run)
    return { ...ackFigures(result), cpuSeconds: cpu({ generator: result.cpuSeconds }) }
  } finally {
    await stopChild(broker.child)
  }
}

// ---------------------------------------------------------------- (c) the peer

async function peer(): Promise<Figures> {
  const url = await createDatabase('bench_peer')
  // The table a user without iotcore would make: keyed by the device's own id, with the same dedup key, time
  // index and BRIN as iotcore's telemetry (which keys devices by an integer, a saving the peer does not get).
  await withClient(url, (c) =>
    c.query(`CREATE TABLE telemetry (
      device_id text NOT NULL, msg_id text NOT NULL, ts timestamptz NOT NULL, received_at timestamptz NOT NULL,
      values jsonb NOT NULL, PRIMARY KEY (device_id, msg_id));
      CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts);
      CREATE INDEX telemetry_received_brin ON telemetry USING brin (received_at)`),
  )
  const broker = await startMosquitto('peer')
  const sub = track(fork(join(HERE, 'peer.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  try {
    let stored = 0
    let failure: string | undefined
    const ready = new Promise<void>((resolve, reject) => {
      sub.on('message', (m: PeerMessage) => {
        if (m.type === 'ready') resolve()
        else if (m.type === 'progress') stored = m.stored
        else if (m.type === 'error') {
          failure ??= m.error
          reject(new Error(`peer subscriber: ${m.error}`))
        }
      })
      sub.once('exit', (code, sig) => reject(new Error(`peer subscriber exited (${code ?? sig})`)))
    })
    const cfg: PeerConfig = {
      type: 'config',
      brokerUrl: `mqtt://127.0.0.1:${broker.port}`,
      databaseUrl: url,
      batchRows: 1000,
      batchMs: 50,
      poolSize: 10,
    }
    sub.send(cfg)
    await ready
    await checkpoint()
    const run = startGenerator(
      broker.port,
      connections((i) => `devices/${deviceName(i)}/telemetry`),
    )
    const { startEpoch } = await run.started
    const cpu = cpuWindow({
      broker: () => cpuOf(broker.child.pid),
      subscriber: () => cpuOf(sub.pid),
      postgres: pgCpu,
    })
    const label = '(c) peer'
    const [load, st] = await Promise.all([
      runLoad(label, run, false),
      waitStored(
        label,
        url,
        startEpoch,
        () => {
          if (failure) throw new Error(`peer subscriber: ${failure}`)
          if (!alive(sub)) throw new Error('peer subscriber exited')
          return stored
        },
        run.acked,
      ),
    ])
    const cpuSeconds = cpu({ generator: load.result.cpuSeconds })
    if (failure) throw new Error(`peer subscriber: ${failure}`)
    const storedSeconds = (st.storedAt - startEpoch) / 1000
    return {
      ...ackFigures(load.result),
      storedPerSec: size.messages / storedSeconds,
      storedSeconds,
      rows: st.count,
      cpuSeconds,
    }
  } finally {
    await stopChild(sub)
    await stopChild(broker.child)
  }
}

// ---------------------------------------------------------------- (d) iotcore

/** Sums a metric's samples (all label sets) from Prometheus text; NaN if it has none. */
function metric(text: string, name: string): number {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$/.exec(line)
    if (!m || m[1] !== name) continue
    sum += Number(m[3])
    found = true
  }
  return found ? sum : Number.NaN
}

const IOTCORE_METRICS = [
  'iotcore_messages_received_total',
  'iotcore_messages_acked_total',
  'iotcore_messages_stored_total',
  'iotcore_messages_duplicate_total',
  'iotcore_messages_quarantined_total',
  'iotcore_messages_rejected_total',
  'iotcore_ingest_errors_total',
  'iotcore_queue_depth',
  'iotcore_queue_oldest_age_seconds',
  'iotcore_ingest_batch_size_sum',
  'iotcore_ingest_batch_size_count',
  'iotcore_ingest_batch_seconds_sum',
  'iotcore_ingest_batch_seconds_count',
  'iotcore_queue_commit_seconds_sum',
  'iotcore_queue_commit_seconds_count',
  'iotcore_process_nodejs_gc_duration_seconds_sum',
  'iotcore_process_nodejs_heap_size_used_bytes',
  'iotcore_process_process_resident_memory_bytes',
]

const IOTCORE_OWN_ENV =
  /^(DATABASE_URL|AMQP_URL|PORT|LOG_LEVEL|IOTCORE_(DATA_DIR|HOST|HTTP_PORT|MQTT_PORT|ADMIN_TOKEN|LOG_LEVEL|ROLES|TELTONIKA_PORT|OSMAND_PORT|JSONL_PORT|SIGNAL_PORT))$/

/** iotcore's tuning knobs from the caller's environment (IOTCORE_INGEST_BATCH_SIZE, ...) pass through. */
function iotcoreEnv(extra: Record<string, string>): {
  env: NodeJS.ProcessEnv
  passed: Record<string, string>
} {
  const env: NodeJS.ProcessEnv = {}
  const passed: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || IOTCORE_OWN_ENV.test(k)) continue
    env[k] = v
    if (k.startsWith('IOTCORE_')) passed[k] = v
  }
  return { env: { ...env, ...extra }, passed }
}

/** Extra node flags for iotcore only, e.g. BENCH_IOTCORE_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const IOTCORE_NODE_ARGS = (process.env.BENCH_IOTCORE_NODE_ARGS || '').split(/\s+/).filter(Boolean)

/**
 * Another checkout's build to run as iotcore (its `dist/src/cli/main.js`), everything else from this one:
 * `npm run bench:ab` measures two commits under the same bench, generator and PostgreSQL.
 */
const IOTCORE_ROOT = process.env.BENCH_IOTCORE_ROOT || ROOT

const RESULTS_DIR = join(ROOT, 'bench', 'results')
const IOTCORE_LOG = join(RESULTS_DIR, 'iotcore.log')

/**
 * BENCH_IOTCORE_SPLIT=1 runs iotcore as two processes on one data dir: `--roles api,gateway` and
 * `--roles ingest`, so the ingest does not share the gateway's event loop.
 */
const IOTCORE_SPLIT = process.env.BENCH_IOTCORE_SPLIT === '1'
/** Gauges read the same queue in every process: the largest, not the sum. */
const GAUGES = new Set(['iotcore_queue_depth', 'iotcore_queue_oldest_age_seconds'])

interface IotcoreProcess {
  name: string
  child: ChildProcess
  base: string
  logs: string[]
}

function spawnIotcore(name: string, env: NodeJS.ProcessEnv, roles: string | undefined, httpPort: number) {
  const args = [...IOTCORE_NODE_ARGS, join(IOTCORE_ROOT, 'dist/src/cli/main.js'), 'start']
  if (roles) args.push('--roles', roles)
  const child = track(
    spawn(process.execPath, args, { env, cwd: IOTCORE_ROOT, stdio: ['ignore', 'pipe', 'pipe'] }),
  )
  // Its log at warn and above (pino's JSON on stdout) and anything on stderr; not the start banner.
  const logs: string[] = []
  let logChars = 0
  const keepLog = (stream: 'stdout' | 'stderr') => (d: Buffer) => {
    for (const line of d.toString().split('\n')) {
      if (!line.trim() || logChars > 200_000) continue
      if (stream === 'stdout' && !line.startsWith('{')) continue
      logs.push(line)
      logChars += line.length
    }
  }
  child.stdout!.on('data', keepLog('stdout'))
  child.stderr!.on('data', keepLog('stderr'))
  return { name, child, base: `http://127.0.0.1:${httpPort}`, logs }
}

async function request(base: string, method: string, path: string, body?: unknown) {
  const r = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return { status: r.status, text: await r.text() }
}

async function waitReady(p: IotcoreProcess): Promise<void> {
  const deadline = Date.now() + 60_000
  for (;;) {
    if (!alive(p.child)) throw new Error(`${p.name} exited at start:\n${p.logs.slice(-20).join('\n')}`)
    const ready = await request(p.base, 'GET', '/readyz').then(
      (r) => r.status === 200,
      () => false,
    )
    if (ready) return
    if (Date.now() > deadline)
      throw new Error(`${p.name} not ready after 60 s:\n${p.logs.slice(-20).join('\n')}`)
    await sleep(100)
  }
}

/** The IMEI of bench tracker `i` (e): 15 digits. */
const imeiOf = (i: number) => `35${String(i).padStart(13, '0')}`

async function iotcore(round: number, protocol: 'mqtt' | 'teltonika' = 'mqtt'): Promise<Figures> {
  const teltonika = protocol === 'teltonika'
  const url = await createDatabase(teltonika ? 'bench_iotcore_teltonika' : 'bench_iotcore')
  const dataDir = join(tmp, `iotcore-data-${protocol}-${round}`)
  mkdirSync(dataDir, { recursive: true })
  const mqttPort = await freePort()
  const teltonikaPort = teltonika ? await freePort() : 0
  const base = {
    DATABASE_URL: url,
    IOTCORE_DATA_DIR: dataDir,
    IOTCORE_HOST: '127.0.0.1',
    IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
    IOTCORE_LOG_LEVEL: 'warn',
    IOTCORE_TELTONIKA_PORT: 'off',
    IOTCORE_OSMAND_PORT: 'off',
    IOTCORE_JSONL_PORT: 'off',
    IOTCORE_SIGNAL_PORT: 'off',
  }
  const plan: Array<{ name: string; roles?: string; mqtt: boolean }> = IOTCORE_SPLIT
    ? [
        { name: 'iotcore gateway', roles: 'api,gateway', mqtt: true },
        { name: 'iotcore ingest', roles: 'ingest', mqtt: false },
      ]
    : [{ name: 'iotcore', mqtt: true }]
  const procs: IotcoreProcess[] = []
  let passed: Record<string, string> = {}
  try {
    for (const step of plan) {
      const httpPort = await freePort()
      const e = iotcoreEnv({
        ...base,
        IOTCORE_HTTP_PORT: String(httpPort),
        IOTCORE_MQTT_PORT: step.mqtt ? String(mqttPort) : 'off',
        // The gateway process (the one with MQTT) takes the trackers too.
        IOTCORE_TELTONIKA_PORT: step.mqtt && teltonika ? String(teltonikaPort) : 'off',
      })
      passed = e.passed
      procs.push(spawnIotcore(step.name, e.env, step.roles, httpPort))
    }
    for (const p of procs) await waitReady(p)
    const front = procs[0]
    const back = procs[procs.length - 1]
    const label = teltonika ? '(e) iotcore Teltonika' : '(d) iotcore'
    status.show(`${label}: registering devices ...`)
    const devices: Array<{ id: string; token: string }> = new Array(size.connections)
    let nextDevice = 0
    await Promise.all(
      Array.from({ length: Math.min(10, size.connections) }, async () => {
        while (nextDevice < size.connections) {
          const i = nextDevice++
          const r = await request(front.base, 'POST', '/api/v1/devices', {
            name: `bench-${deviceName(i)}`,
            ...(teltonika ? { imei: imeiOf(i) } : {}),
          })
          if (r.status !== 201) throw new Error(`POST /api/v1/devices: ${r.status} ${r.text}`)
          const b = JSON.parse(r.text)
          devices[i] = { id: b.id, token: b.token }
        }
      }),
    )
    await checkpoint()
    const run = teltonika
      ? startTeltonikaGenerator(
          teltonikaPort,
          devices.map((_, i) => imeiOf(i)),
        )
      : startGenerator(
          mqttPort,
          connections(
            (i) => `devices/${devices[i].id}/telemetry`,
            (i) => [devices[i].id, devices[i].token],
          ),
        )
    const { startEpoch } = await run.started
    const cpu = cpuWindow({
      iotcore: () => procs.reduce((sum, p) => sum + cpuOf(p.child.pid), 0),
      postgres: pgCpu,
    })
    const gateway0 = threadSched(front.child.pid)
    let gatewaySeconds: number | undefined
    let gatewayWaitSeconds: number | undefined
    let ackCpuSeconds: Record<string, number> | undefined
    // iotcore's own count, for the progress line and to know when to count rows often.
    let storedMetric = 0
    let metricAt = 0
    const hint = async () => {
      for (const p of procs) {
        if (!alive(p.child)) throw new Error(`${p.name} exited:\n${p.logs.slice(-20).join('\n')}`)
      }
      // Serving /metrics costs iotcore's gateway thread ~10 ms: while the acks are still being measured, read
      // it once a second (the peer reports its count over IPC, Mosquitto is asked nothing).
      if (Date.now() - metricAt >= (run.acked() < size.messages ? 1000 : 250)) {
        metricAt = Date.now()
        try {
          const text = (await request(back.base, 'GET', '/metrics')).text
          storedMetric = metric(text, 'iotcore_messages_stored_total') || 0
        } catch {}
      }
      return storedMetric
    }
    const [load, st] = await Promise.all([
      runLoad(label, run, false).then((r) => {
        const gateway = threadSched(front.child.pid)
        gatewaySeconds = gateway.run - gateway0.run
        gatewayWaitSeconds = gateway.wait - gateway0.wait
        ackCpuSeconds = cpu({ generator: r.result.cpuSeconds })
        return r
      }),
      waitStored(label, url, startEpoch, hint, run.acked),
    ])
    const cpuSeconds = cpu({ generator: load.result.cpuSeconds })
    const storedSeconds = (st.storedAt - startEpoch) / 1000
    // The counters follow each batch's commit by a moment: let them settle, then read them all.
    await sleep(300)
    const metrics: Record<string, number> = {}
    for (const p of procs) {
      const text = (await request(p.base, 'GET', '/metrics')).text
      for (const name of IOTCORE_METRICS) {
        // A labelled counter nothing has touched yet has no sample: zero.
        const v = metric(text, name) || 0
        metrics[name] = GAUGES.has(name) ? Math.max(metrics[name] ?? 0, v) : (metrics[name] ?? 0) + v
      }
    }
    const t0 = performance.now()
    const stopped = await Promise.all(procs.map((p) => stopChild(p.child, 20_000)))
    return {
      ...ackFigures(load.result),
      storedPerSec: size.messages / storedSeconds,
      storedSeconds,
      rows: st.count,
      cpuSeconds,
      gatewaySeconds,
      gatewayWaitSeconds,
      ackCpuSeconds,
      iotcore: {
        metrics,
        shutdown: {
          graceful: stopped.every((x) => x.graceful),
          seconds: (performance.now() - t0) / 1000,
          exitCode: procs.map((p) => p.child.exitCode).find((c) => c !== 0) ?? 0,
        },
        logLines: procs.reduce((n, p) => n + p.logs.length, 0),
        env: { ...passed, ...(IOTCORE_SPLIT ? { BENCH_IOTCORE_SPLIT: '1' } : {}) },
      },
    }
  } finally {
    for (const p of procs) if (alive(p.child)) await stopChild(p.child, 5000)
    const lines = procs.flatMap((p) => p.logs.map((l) => (procs.length > 1 ? `[${p.name}] ${l}` : l)))
    if (lines.length) {
      mkdirSync(RESULTS_DIR, { recursive: true })
      appendFileSync(IOTCORE_LOG, `# round ${round}\n${lines.join('\n')}\n`)
    }
  }
}

// ---------------------------------------------------------------- rounds and the report

type Key = 'a' | 'b' | 'c' | 'd' | 'e'
type Outcome = { ok: true; value: Figures } | { ok: false; error: string }

const SYSTEMS: Array<{ key: Key; title: string; db?: string; run: (round: number) => Promise<Figures> }> = [
  { key: 'a', title: '(a) database ceiling', db: 'bench_copy', run: dbCeiling },
  { key: 'b', title: '(b) MQTT ceiling', run: mqttCeiling },
  { key: 'c', title: '(c) peer', db: 'bench_peer', run: peer },
  { key: 'd', title: '(d) iotcore', db: 'bench_iotcore', run: (round) => iotcore(round) },
  {
    key: 'e',
    title: '(e) iotcore Teltonika',
    db: 'bench_iotcore_teltonika',
    run: (round) => iotcore(round, 'teltonika'),
  },
]

async function phase(title: string, fn: () => Promise<Figures>): Promise<Outcome> {
  const t0 = performance.now()
  try {
    const value = await fn()
    // The share of the machine that went to processes outside the bench while the clock ran.
    const seconds = value.storedSeconds ?? value.ackSeconds ?? 0
    if (seconds > 0) value.otherShare = (value.cpuSeconds.other ?? 0) / (seconds * cpus().length)
    const noisy = (value.otherShare ?? 0) > NOISY_SHARE
    status.line(
      `  ${title}: done in ${secs(performance.now() - t0)}` +
        (noisy ? `; NOISY: ${pct(value.otherShare)} of the machine went to other processes` : ''),
    )
    return { ok: true, value }
  } catch (err) {
    if (!aborted) status.line(`  ${title}: FAILED: ${(err as Error).message}`)
    return { ok: false, error: (err as Error).message }
  }
}

function median(xs: Array<number | undefined>): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((p, q) => p - q)
  if (v.length === 0) return undefined
  const mid = v.length >> 1
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

/** The median of every figure over the rounds that worked. */
/** The median of every figure over the rounds that worked; noisy rounds count only if all of them were. */
function medianFigures(outcomes: Outcome[]): Figures | undefined {
  const all = outcomes.flatMap((o) => (o.ok ? [o.value] : []))
  const clean = all.filter((x) => (x.otherShare ?? 0) <= NOISY_SHARE)
  const ok = clean.length > 0 ? clean : all
  if (ok.length === 0) return undefined
  const pick = (f: (x: Figures) => number | undefined) => median(ok.map(f))
  const cpuKeys = [...new Set(ok.flatMap((x) => Object.keys(x.cpuSeconds)))]
  return {
    acksPerSec: pick((x) => x.acksPerSec),
    p50Ms: pick((x) => x.p50Ms),
    p99Ms: pick((x) => x.p99Ms),
    maxMs: pick((x) => x.maxMs),
    ackSeconds: pick((x) => x.ackSeconds),
    storedPerSec: pick((x) => x.storedPerSec),
    storedSeconds: pick((x) => x.storedSeconds),
    rows: pick((x) => x.rows),
    gatewaySeconds: pick((x) => x.gatewaySeconds),
    cpuSeconds: Object.fromEntries(cpuKeys.map((k) => [k, pick((x) => x.cpuSeconds[k]) ?? 0])),
    otherShare: pick((x) => x.otherShare),
    rounds: ok.length,
  }
}

function verdict(ratio: number | undefined, t: { first: number; goal: number }): string {
  if (ratio === undefined || !Number.isFinite(ratio)) return 'n/a'
  if (ratio >= t.goal) return 'goal met'
  if (ratio >= t.first) return `first target met; goal ${t.goal} not yet`
  return `BELOW the first target ${t.first}`
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows
    .map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('   '))
    .map((line, i) => (i === 0 ? `${line}\n${'-'.repeat(line.length)}` : line))
    .join('\n')
}

const ms = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : `${fmt(x, 1)} ms`)
const ratio = (x: number | undefined, y: number | undefined) =>
  x !== undefined && y !== undefined && y > 0 ? x / y : undefined
const times = (x: number | undefined) => (x === undefined ? 'n/a' : `${x.toFixed(2)}x`)

function report(outcomes: Record<Key, Outcome[]>): {
  medians: Record<Key, Figures | undefined>
  ratios: Record<string, unknown>
} {
  const medians = {
    a: medianFigures(outcomes.a),
    b: medianFigures(outcomes.b),
    c: medianFigures(outcomes.c),
    d: medianFigures(outcomes.d),
    e: medianFigures(outcomes.e),
  }
  const state = (k: Key) => {
    if (!only.has(k)) return 'not run'
    const failed = outcomes[k].filter((o) => !o.ok).length
    if (failed === outcomes[k].length) return 'FAILED'
    const used = medians[k]?.rounds ?? 0
    const ok = outcomes[k].length - failed
    return [failed ? `${failed} failed` : '', used < ok ? `${ok - used} noisy left out` : '']
      .filter(Boolean)
      .join(', ')
  }
  const cpu = (f: Figures | undefined) => {
    if (!f) return ''
    const c = f.cpuSeconds
    const n = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(1))
    const system =
      c.broker !== undefined || c.subscriber !== undefined || c.iotcore !== undefined
        ? (c.broker ?? 0) + (c.subscriber ?? 0) + (c.iotcore ?? 0)
        : undefined
    return `${n(c.generator)} / ${n(system)} / ${n(c.postgres)} / ${n(c.other)}`
  }
  const line = (k: Key, name: string, acks: boolean, stored: boolean) => {
    const f = medians[k]
    const st = state(k)
    return [
      name + (st ? ` (${st})` : ''),
      acks ? fmt(f?.acksPerSec) : '-',
      acks ? ms(f?.p50Ms) : '-',
      acks ? ms(f?.p99Ms) : '-',
      stored ? fmt(f?.storedPerSec) : '-',
      cpu(f),
    ]
  }
  const rounds = size.rounds
  console.log('')
  console.log(rounds > 1 ? `medians of ${rounds} rounds:` : 'one round:')
  console.log(
    table([
      ['system', 'acks/s', 'ack p50', 'ack p99', 'stored/s', 'CPU s: load / system / postgres / other'],
      line('a', '(a) PostgreSQL COPY, unique index', false, true),
      line('b', '(b) Mosquitto, nothing stored', true, false),
      line('c', '(c) peer: Mosquitto + subscriber', true, true),
      line('d', '(d) iotcore, durable acks', true, true),
      line('e', '(e) iotcore, Teltonika Codec 8E', true, true),
    ]),
  )

  const perRound = Array.from({ length: rounds }, (_, r) => {
    const v = (k: Key) => {
      const o = outcomes[k][r]
      return o?.ok ? o.value : undefined
    }
    return {
      other: (['a', 'b', 'c', 'd', 'e'] as Key[]).map((k) => {
        const share = v(k)?.otherShare
        return share === undefined ? '-' : pct(share) + (share > NOISY_SHARE ? '*' : '')
      }),
      storedDC: ratio(v('d')?.storedPerSec, v('c')?.storedPerSec),
      acksDB: ratio(v('d')?.acksPerSec, v('b')?.acksPerSec),
      storedED: ratio(v('e')?.storedPerSec, v('d')?.storedPerSec),
      figures: {
        a: v('a')?.storedPerSec,
        b: v('b')?.acksPerSec,
        cStored: v('c')?.storedPerSec,
        dAcks: v('d')?.acksPerSec,
        dStored: v('d')?.storedPerSec,
        eStored: v('e')?.storedPerSec,
      },
    }
  })
  if (rounds > 1) {
    console.log('')
    console.log(
      table([
        [
          'round',
          '(a) rows/s',
          '(b) acks/s',
          '(c) stored/s',
          '(d) acks/s',
          '(d) stored/s',
          '(e) stored/s',
          'd/c stored',
          'd/b acks',
          'e/d stored',
        ],
        ...perRound.map((p, r) => [
          String(r + 1),
          fmt(p.figures.a),
          fmt(p.figures.b),
          fmt(p.figures.cStored),
          fmt(p.figures.dAcks),
          fmt(p.figures.dStored),
          fmt(p.figures.eStored),
          times(p.storedDC),
          times(p.acksDB),
          times(p.storedED),
          p.other.join(' / '),
        ]),
      ]),
    )
    console.log(
      `other load: the share of the machine other processes took while the clock ran; * = over ${pct(NOISY_SHARE)}`,
    )
  }

  const storedDC = ratio(medians.d?.storedPerSec, medians.c?.storedPerSec)
  const acksDB = ratio(medians.d?.acksPerSec, medians.b?.acksPerSec)
  const of = rounds > 1 ? ' (of the medians)' : ''
  // Each round's own ratio compares two systems measured a minute apart; the medians of a system may come from
  // different rounds than its baseline's (noisy rounds are left out of each separately).
  const storedDCRounds = median(perRound.map((p) => p.storedDC))
  const acksDBRounds = median(perRound.map((p) => p.acksDB))
  const ofRounds = (x: number | undefined) =>
    rounds > 1 ? `; the rounds' own ratios: median ${times(x)}` : ''
  console.log('')
  console.log(
    `d/c stored: ${times(storedDC)}${of}   first target >= ${TARGETS.stored.first}, goal ${TARGETS.stored.goal}: ` +
      verdict(storedDC, TARGETS.stored) +
      ofRounds(storedDCRounds),
  )
  console.log(
    `d/b acks:   ${times(acksDB)}${of}   first target >= ${TARGETS.acks.first}, goal ${TARGETS.acks.goal}: ` +
      verdict(acksDB, TARGETS.acks) +
      ofRounds(acksDBRounds),
  )
  const storedDA = ratio(medians.d?.storedPerSec, medians.a?.storedPerSec)
  if (storedDA !== undefined) console.log(`d/a stored: ${times(storedDA)} of the plain COPY ceiling`)
  const storedED = ratio(medians.e?.storedPerSec, medians.d?.storedPerSec)
  if (only.has('e'))
    console.log(
      `e/d stored: ${times(storedED)}${of}   the Teltonika path (Codec 8E, ${TELTONIKA_RECORDS} records a packet, ` +
        'one packet in flight per tracker) against the MQTT path',
    )

  const ackCpu = (c: Record<string, number> | undefined) =>
    c
      ? `iotcore ${c.iotcore.toFixed(2)}, postgres ${c.postgres.toFixed(2)}, other ${c.other.toFixed(2)}`
      : '-'
  // iotcore's own account of every round: nothing lost, nothing doubled, nothing complained about.
  const accounts = [
    ...outcomes.d.map((o, r) => ({ who: 'iotcore', o, r })),
    ...outcomes.e.map((o, r) => ({ who: 'iotcore Teltonika', o, r })),
  ]
  accounts.forEach(({ who, o, r }) => {
    if (!o.ok || !o.value.iotcore) return
    const m = o.value.iotcore.metrics
    const rows = o.value.rows ?? 0
    const problems = [
      rows !== size.messages ? `${fmt(size.messages - rows)} rows MISSING` : '',
      m.iotcore_messages_acked_total !== size.messages ? `acked ${fmt(m.iotcore_messages_acked_total)}` : '',
      m.iotcore_messages_stored_total !== size.messages
        ? `stored ${fmt(m.iotcore_messages_stored_total)}`
        : '',
      m.iotcore_messages_duplicate_total ? `duplicate ${fmt(m.iotcore_messages_duplicate_total)}` : '',
      m.iotcore_messages_quarantined_total ? `quarantined ${fmt(m.iotcore_messages_quarantined_total)}` : '',
      m.iotcore_messages_rejected_total ? `rejected ${fmt(m.iotcore_messages_rejected_total)}` : '',
      m.iotcore_ingest_errors_total ? `ingest errors ${fmt(m.iotcore_ingest_errors_total)}` : '',
      m.iotcore_queue_depth ? `queue depth ${fmt(m.iotcore_queue_depth)}` : '',
      o.value.iotcore.logLines
        ? `${o.value.iotcore.logLines} log lines at warn+ (bench/results/iotcore.log)`
        : '',
      o.value.iotcore.shutdown.graceful ? '' : 'graceful stop FAILED',
    ].filter(Boolean)
    const name = rounds > 1 ? `${who} round ${r + 1}` : who
    console.log(
      `${name}: ${problems.length ? problems.join(', ') : `acked = stored = rows = ${fmt(size.messages)}, clean log`}; ` +
        `mean ingest batch ${fmt(m.iotcore_ingest_batch_size_sum / m.iotcore_ingest_batch_size_count)} readings in ` +
        `${ms((1000 * m.iotcore_ingest_batch_seconds_sum) / m.iotcore_ingest_batch_seconds_count)}, ` +
        `gateway thread ${fmt((1e6 * (o.value.gatewaySeconds ?? Number.NaN)) / size.messages, 1)} µs CPU per reading acked ` +
        `(it waited ${fmt(o.value.gatewayWaitSeconds, 2)} s for a core), ` +
        `CPU s while acking: ${ackCpu(o.value.ackCpuSeconds)}, ` +
        `group commits ${fmt(m.iotcore_queue_commit_seconds_count)} of mean ` +
        `${ms((1000 * m.iotcore_queue_commit_seconds_sum) / m.iotcore_queue_commit_seconds_count)}, ` +
        `GC ${m.iotcore_process_nodejs_gc_duration_seconds_sum.toFixed(2)} s, ` +
        `RSS ${fmt(m.iotcore_process_process_resident_memory_bytes / 2 ** 20)} MiB, ` +
        `stop ${fmt(o.value.iotcore.shutdown.seconds * 1000)} ms`,
    )
  })
  for (const k of ['b', 'c', 'd', 'e'] as Key[]) {
    outcomes[k].forEach((o, r) => {
      if (o.ok && o.value.unexpectedAcks)
        console.log(`(${k}) round ${r + 1}: ${o.value.unexpectedAcks} PUBACKs for packet ids not in flight`)
    })
  }
  const measured = Object.values(outcomes).flatMap((list) => list.flatMap((o) => (o.ok ? [o.value] : [])))
  const noisy = measured.filter((x) => (x.otherShare ?? 0) > NOISY_SHARE).length
  if (noisy > 0) {
    console.log(
      `note: in ${noisy} of ${measured.length} measurements other processes took more than ` +
        `${pct(NOISY_SHARE)} of the machine (NOISY above); they are left out of the medians unless all of ` +
        "a system's rounds were. The machine is shared: more rounds (BENCH_ROUNDS) give steadier medians.",
    )
  }
  return { medians, ratios: { storedDC, acksDB, storedED, storedDCRounds, acksDBRounds, perRound } }
}

async function main(): Promise<number> {
  console.log(
    `iotcore bench: ${fmt(size.messages)} readings, ${size.connections} connections x ${size.inflight} in flight, ` +
      `${size.rounds} round${size.rounds > 1 ? 's' : ''}; ${cpus().length} cores, node ${process.version}`,
  )
  const t0 = performance.now()
  rmSync(IOTCORE_LOG, { force: true })
  database = new EmbeddedDatabase(join(tmp, 'postgres'), log)
  serverUrl = await database.start()
  try {
    postmasterPid = Number(readFileSync(join(tmp, 'postgres', 'pg', 'postmaster.pid'), 'utf8').split('\n')[0])
  } catch {}
  await withClient(serverUrl, async (c) => {
    const v = (await c.query('SHOW server_version')).rows[0].server_version
    console.log(`PostgreSQL ${v} (embedded, one server for all systems, a database each)`)
  })

  const outcomes: Record<Key, Outcome[]> = { a: [], b: [], c: [], d: [], e: [] }
  for (let round = 1; round <= size.rounds; round++) {
    if (size.rounds > 1) status.line(`round ${round} of ${size.rounds}`)
    for (const s of SYSTEMS) {
      if (aborted) return 130
      if (!only.has(s.key)) continue
      outcomes[s.key].push(await phase(s.title, () => s.run(round)))
      if (s.db) await dropDatabase(s.db)
    }
  }
  if (aborted) return 130
  const { medians, ratios } = report(outcomes)

  mkdirSync(RESULTS_DIR, { recursive: true })
  const results = {
    when: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version },
    size,
    targets: TARGETS,
    ratios,
    medians: {
      databaseCeiling: medians.a ?? null,
      mqttCeiling: medians.b ?? null,
      peer: medians.c ?? null,
      iotcore: medians.d ?? null,
      iotcoreTeltonika: medians.e ?? null,
    },
    rounds: Array.from({ length: size.rounds }, (_, r) => ({
      databaseCeiling: outcomes.a[r] ?? null,
      mqttCeiling: outcomes.b[r] ?? null,
      peer: outcomes.c[r] ?? null,
      iotcore: outcomes.d[r] ?? null,
      iotcoreTeltonika: outcomes.e[r] ?? null,
    })),
    totalSeconds: (performance.now() - t0) / 1000,
  }
  writeFileSync(join(RESULTS_DIR, 'latest.json'), JSON.stringify(results, null, 2) + '\n')
  console.log(`\nresults: bench/results/latest.json (${secs(performance.now() - t0)} in all)`)
  return Object.values(outcomes).some((list) => list.some((o) => !o.ok)) ? 1 : 0
}

main()
  .then(
    async (code) => {
      await shutdown()
      process.exit(code)
    },
    async (err) => {
      status.clear()
      console.error(err)
      await shutdown()
      process.exit(1)
    },
  )
  .catch(() => process.exit(1))
