/**
 * `npm run bench:ab -- <base checkout>`: CPU per stored reading of two iotcore builds, measured in alternating
 * runs of the bench's iotcore system (d) on the same machine. CPU seconds depend far less on other load than
 * throughput does, but a shared machine still moves them by several percent from run to run: the pairs run
 * in ABBA order (base, new, new, base, ...) so a drift in load falls on both sides, and the report gives
 * medians, the spread, and the median of the paired differences.
 *
 * The base is another checkout with its own build (`git worktree add ../base <commit>`, node_modules linked,
 * `npm run build`); the new side is this checkout unless BENCH_AB_NEW names another. Both sides run under
 * this checkout's bench, generator and PostgreSQL. See bench/README.md.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { envNumber } from './common.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const RESULTS_DIR = join(ROOT, 'bench', 'results')
const MAIN = 'dist/src/cli/main.js'
/** A run in which other processes took more than this share of the machine is noisy (as in run.ts). */
const NOISY_SHARE = envNumber('BENCH_NOISY_PERCENT', 15) / 100

interface Side {
  name: 'base' | 'new'
  root: string
  nodeArgs: string
}

interface Run {
  side: Side['name']
  pair: number
  /** CPU seconds per 100,000 stored readings */
  iotcore: number
  postgres: number
  storedPerSec: number
  acksPerSec: number
  /** CPU µs of iotcore's main thread (the gateways) per reading, from the first publish to the last ack */
  gatewayMicros: number
  rssMiB: number
  gcSeconds: number
  otherShare: number
}

const usage = 'usage: npm run bench:ab -- <base checkout, built> (or BENCH_AB_BASE); see bench/README.md'

function sides(): Side[] {
  const base = process.argv[2] || process.env.BENCH_AB_BASE
  if (!base) throw new Error(usage)
  const list: Side[] = [
    { name: 'base', root: resolve(base), nodeArgs: process.env.BENCH_AB_BASE_NODE_ARGS ?? '' },
    {
      name: 'new',
      root: resolve(process.env.BENCH_AB_NEW || ROOT),
      nodeArgs: process.env.BENCH_AB_NEW_NODE_ARGS ?? '',
    },
  ]
  for (const s of list) {
    if (!existsSync(join(s.root, MAIN))) throw new Error(`${s.root}: no ${MAIN}; build it first. ${usage}`)
  }
  return list
}

/** One bench run of system (d) on one side; its figures from the bench's results file. */
async function runOnce(side: Side, pair: number): Promise<Run> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_ONLY: 'd',
    BENCH_ROUNDS: '1',
    BENCH_MESSAGES: process.env.BENCH_MESSAGES || '200000',
    BENCH_IOTCORE_ROOT: side.root,
    BENCH_IOTCORE_NODE_ARGS: side.nodeArgs,
  }
  const child = spawn(process.execPath, [join(ROOT, 'dist/bench/run.js')], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  const code = await new Promise<number | null>((r) => child.once('exit', r))
  if (code !== 0) throw new Error(`bench run on ${side.name} (${side.root}) failed (exit ${code}):\n${out}`)
  const results = JSON.parse(readFileSync(join(RESULTS_DIR, 'latest.json'), 'utf8'))
  const d = results.rounds[0].iotcore
  if (!d?.ok) throw new Error(`bench run on ${side.name}: ${d?.error ?? 'no iotcore figures'}`)
  const v = d.value
  const per100k = 100_000 / results.size.messages
  return {
    side: side.name,
    pair,
    iotcore: v.cpuSeconds.iotcore * per100k,
    postgres: v.cpuSeconds.postgres * per100k,
    storedPerSec: v.storedPerSec,
    acksPerSec: v.acksPerSec,
    gatewayMicros: (1e6 * v.gatewaySeconds) / results.size.messages,
    rssMiB: v.iotcore.metrics.iotcore_process_process_resident_memory_bytes / 2 ** 20,
    gcSeconds: v.iotcore.metrics.iotcore_process_nodejs_gc_duration_seconds_sum * per100k,
    otherShare: v.otherShare ?? 0,
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

const f = (n: number, digits = 2) => n.toFixed(digits)
const row = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(6) : c.padStart(9))).join(' ')
const HEAD = ['', 'iotcore', 'postgres', 'total', 'stored/s', 'acks/s', 'gw µs', 'RSS MiB', 'GC s', 'other']
const cells = (r: Run) => [
  f(r.iotcore),
  f(r.postgres),
  f(r.iotcore + r.postgres),
  f(r.storedPerSec, 0),
  f(r.acksPerSec, 0),
  f(r.gatewayMicros),
  f(r.rssMiB, 0),
  f(r.gcSeconds),
  `${Math.round(r.otherShare * 100)}%`,
]

async function main(): Promise<void> {
  const [base, next] = sides()
  const pairs = envNumber('BENCH_AB_PAIRS', 5)
  console.log(
    `A/B: ${pairs} pairs, ${process.env.BENCH_MESSAGES || '200000'} readings a run; CPU seconds per 100,000 stored\n` +
      `  base: ${base.root} ${base.nodeArgs}\n  new:  ${next.root} ${next.nodeArgs}`,
  )
  console.log(row(['run', ...HEAD.slice(1)]))
  const runs: Run[] = []
  for (let p = 1; p <= pairs; p++) {
    // ABBA: whichever side ran second in one pair runs first in the next.
    for (const side of p % 2 ? [base, next] : [next, base]) {
      const r = await runOnce(side, p)
      runs.push(r)
      console.log(row([`${p}${side.name === 'base' ? 'A' : 'B'}`, ...cells(r)]))
    }
  }
  const keys = [
    'iotcore',
    'postgres',
    'total',
    'storedPerSec',
    'acksPerSec',
    'gatewayMicros',
    'rssMiB',
    'gcSeconds',
  ] as const
  const value = (r: Run, k: (typeof keys)[number]) => (k === 'total' ? r.iotcore + r.postgres : r[k])
  const summary: Record<string, Record<string, number>> = {}
  console.log('')
  for (const side of ['base', 'new'] as const) {
    const rs = runs.filter((r) => r.side === side)
    summary[side] = {}
    for (const k of keys) summary[side][k] = median(rs.map((r) => value(r, k)))
    // Under other load the figures rise (smaller batches, caches shared): the quiet runs alone, for scale.
    const quiet = rs.filter((r) => r.otherShare <= NOISY_SHARE)
    summary[side].quietRuns = quiet.length
    if (quiet.length > 0) summary[side].quietTotal = median(quiet.map((r) => value(r, 'total')))
    const spread = (k: (typeof keys)[number]) => {
      const v = rs.map((r) => value(r, k))
      return `${f(Math.min(...v))}-${f(Math.max(...v))}`
    }
    console.log(
      `${side.padEnd(4)} medians: iotcore ${f(summary[side].iotcore)} (${spread('iotcore')}), postgres ` +
        `${f(summary[side].postgres)} (${spread('postgres')}), total ${f(summary[side].total)} (${spread('total')}); ` +
        `stored/s ${f(summary[side].storedPerSec, 0)}, acks/s ${f(summary[side].acksPerSec, 0)}, ` +
        `gateway thread ${f(summary[side].gatewayMicros)} µs per ack (${spread('gatewayMicros')}), ` +
        `RSS ${f(summary[side].rssMiB, 0)} MiB; ${quiet.length} quiet run(s)` +
        (quiet.length > 0 ? `, their total ${f(summary[side].quietTotal)}` : ''),
    )
  }
  const diffs: Record<string, number> = {}
  for (const k of ['iotcore', 'postgres', 'total', 'gatewayMicros'] as const) {
    const d: number[] = []
    for (let p = 1; p <= pairs; p++) {
      const a = runs.find((r) => r.pair === p && r.side === 'base')!
      const b = runs.find((r) => r.pair === p && r.side === 'new')!
      d.push(value(b, k) - value(a, k))
    }
    diffs[k] = median(d)
    const unit = k === 'gatewayMicros' ? 'µs' : 's'
    console.log(
      `new - base, ${k.padEnd(13)}: median of pairs ${f(diffs[k])} ${unit} (${f((100 * diffs[k]) / summary.base[k], 1)}%), ` +
        `pairs ${d.map((x) => f(x)).join(' ')}`,
    )
  }
  // Throughput moves with the other load far more than CPU does: compared pair by pair, as a ratio.
  const acks: number[] = []
  for (let p = 1; p <= pairs; p++) {
    const a = runs.find((r) => r.pair === p && r.side === 'base')!
    const b = runs.find((r) => r.pair === p && r.side === 'new')!
    acks.push(b.acksPerSec / a.acksPerSec)
  }
  diffs.acksRatio = median(acks)
  console.log(
    `new / base, acks/s: median of pairs ${f(diffs.acksRatio)}x, pairs ${acks.map((x) => f(x)).join(' ')}`,
  )
  mkdirSync(RESULTS_DIR, { recursive: true })
  writeFileSync(
    join(RESULTS_DIR, 'ab.json'),
    `${JSON.stringify({ when: new Date().toISOString(), base, new: next, runs, summary, diffs }, null, 2)}\n`,
  )
  console.log('\nresults: bench/results/ab.json')
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err)
  process.exit(1)
})
