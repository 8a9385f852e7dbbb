/** Shared by the bench orchestrator and its child processes: the load, the readings, small helpers. */
export { freePort } from '../src/store/embedded.js'
import { readFileSync, readdirSync } from 'node:fs'

export interface BenchSize {
  messages: number
  connections: number
  inflight: number
  /** each system is measured this many times, interleaved; the report gives the medians */
  rounds: number
}

function envInt(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return def
  const n = Number(raw.replace(/[_,]/g, ''))
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name}=${JSON.stringify(raw)}: expected an integer from ${min} to ${max}`)
  }
  return n
}

export function benchSize(): BenchSize {
  const connections = envInt('BENCH_CONNECTIONS', 100, 1, 5000)
  return {
    messages: envInt('BENCH_MESSAGES', 200_000, connections, 50_000_000),
    connections,
    // Packet ids are 16 bits: a window must stay well under 65,535.
    inflight: envInt('BENCH_INFLIGHT', 50, 1, 10_000),
    rounds: envInt('BENCH_ROUNDS', 3, 1, 100),
  }
}

export function envNumber(name: string, def: number): number {
  return envInt(name, def, 0, Number.MAX_SAFE_INTEGER)
}

/** How many readings connection/device `i` sends: the total spread evenly, the remainder to the first ones. */
export function perConnection(size: BenchSize): number[] {
  const base = Math.floor(size.messages / size.connections)
  const extra = size.messages % size.connections
  return Array.from({ length: size.connections }, (_, i) => base + (i < extra ? 1 : 0))
}

/** A fleet reading, as a device would send it. */
export interface FleetReading {
  ts: number
  msgId: string
  lat: number
  lon: number
  speed: number
  rpm: number
  fuel: number
  coolant: number
  odometer: number
}

const TS_BASE = Date.UTC(2026, 0, 1)

/** Deterministic noise in [0, 1) from three integers: every system gets the very same readings. */
function noise(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35) ^ (c * 0x27d4eb2f)
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d)
  h = Math.imul(h ^ (h >>> 12), 0x297a2d39)
  h ^= h >>> 15
  return (h >>> 0) / 4294967296
}

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits

/** Reading number `seq` of device number `dev`: about 150 bytes as JSON. */
export function fleetReading(dev: number, seq: number): FleetReading {
  return {
    ts: TS_BASE + dev * 7919 + seq * 1000,
    msgId: `truck-${dev}-${String(seq).padStart(6, '0')}`,
    lat: round(37.9 + dev * 0.001 + seq * 0.00001 + noise(dev, seq, 1) * 0.0001, 6),
    lon: round(23.7 + dev * 0.001 + seq * 0.00001 + noise(dev, seq, 2) * 0.0001, 6),
    speed: round(noise(dev, seq, 3) * 120, 1),
    rpm: Math.round(800 + noise(dev, seq, 4) * 3200),
    fuel: round(10 + noise(dev, seq, 5) * 90, 1),
    coolant: round(80 + noise(dev, seq, 6) * 25, 1),
    odometer: round(100_000 + dev * 1000 + seq * 0.3, 1),
  }
}

export function fleetPayload(dev: number, seq: number): Buffer {
  return Buffer.from(JSON.stringify(fleetReading(dev, seq)))
}

/** Percentile of an ascending-sorted array (nearest rank). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

/** Linux clock ticks per second for /proc/<pid>/stat (USER_HZ, 100 on every mainstream kernel). */
const CLK_TCK = 100

interface ProcStat {
  ppid: number
  /** own user + system time, seconds */
  self: number
  /** reaped children's user + system time, seconds */
  children: number
}

function procStat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces, hence the last ')').
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return {
      ppid: Number(f[1]),
      self: (Number(f[11]) + Number(f[12])) / CLK_TCK,
      children: (Number(f[13]) + Number(f[14])) / CLK_TCK,
    }
  } catch {
    return undefined
  }
}

/**
 * One thread's scheduling so far, to the nanosecond (`/proc/<pid>/task/<tid>/schedstat`; zeros if it is gone):
 * the seconds it ran, and the seconds it was ready to run but waited for a core. The main thread of a Node
 * process is the one whose id is the process's.
 */
export function threadSched(pid: number | undefined, tid = pid): { run: number; wait: number } {
  if (pid === undefined) return { run: 0, wait: 0 }
  try {
    const f = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')
    return { run: Number(f[0]) / 1e9, wait: Number(f[1]) / 1e9 }
  } catch {
    return { run: 0, wait: 0 }
  }
}

/** CPU seconds a process has used so far (0 if it is gone). */
export function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0
  return procStat(pid)?.self ?? 0
}

/**
 * CPU seconds of a process and all its descendants, living or reaped: PostgreSQL's postmaster with its
 * backends, checkpointer, WAL writer.
 */
export function cpuOfTree(pid: number | undefined): number {
  if (pid === undefined) return 0
  const root = procStat(pid)
  if (!root) return 0
  const byParent = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const st = procStat(Number(name))
    if (!st) continue
    let list = byParent.get(st.ppid)
    if (!list) byParent.set(st.ppid, (list = []))
    list.push(Number(name))
  }
  let total = root.self + root.children
  const stack = [...(byParent.get(pid) ?? [])]
  while (stack.length > 0) {
    const p = stack.pop()!
    const st = procStat(p)
    if (st) total += st.self + st.children
    stack.push(...(byParent.get(p) ?? []))
  }
  return total
}

/** CPU seconds the whole machine has been busy (all cores, every process), from /proc/stat. */
export function machineCpu(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0)) / CLK_TCK
  } catch {
    return 0
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Messages between the orchestrator and its children. */
export interface GeneratorConnection {
  clientId: string
  username?: string
  password?: string
  topic: string
  /** which device's readings this connection sends */
  device: number
}

export interface GeneratorConfig {
  type: 'config'
  host: string
  port: number
  connections: GeneratorConnection[]
  perConnection: number[]
  inflight: number
  /** give up when no PUBACK arrives for this long */
  stallMs: number
  progressMs: number
}

/** The Teltonika load generator's configuration (teltonika-generator.ts): one IMEI per connection. */
export interface TeltonikaGeneratorConfig {
  type: 'config'
  host: string
  port: number
  imeis: string[]
  perConnection: number[]
  /** Records per Codec 8 Extended packet; a connection has one packet in flight, as a tracker does. */
  recordsPerPacket: number
  /** give up when no ack arrives for this long */
  stallMs: number
  progressMs: number
}

export interface GeneratorResult {
  type: 'done'
  ok: boolean
  error?: string
  sent: number
  acked: number
  expected: number
  /** ms since the epoch of the first publish */
  startEpoch: number
  /** from the first publish to the last PUBACK */
  seconds: number
  acksPerSec: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  /** the generator's own CPU while the clock ran */
  cpuSeconds: number
  encodeSeconds: number
  connectSeconds: number
  unexpectedAcks: number
}

export type GeneratorMessage =
  | { type: 'started'; startEpoch: number; encodeSeconds: number; connectSeconds: number }
  | { type: 'progress'; acked: number }
  | GeneratorResult

export interface PeerConfig {
  type: 'config'
  brokerUrl: string
  databaseUrl: string
  batchRows: number
  batchMs: number
  poolSize: number
}

export type PeerMessage =
  | { type: 'ready' }
  | { type: 'progress'; received: number; stored: number }
  | { type: 'error'; error: string }
