import { parseArgs } from 'node:util'
import { loadClientConfig } from '../config/index.js'
import { IotError } from '../errors.js'
import { SENDERS, type SimDevice } from './senders.js'
import { Vehicle, prng } from './vehicle.js'

export const SIMULATE_USAGE = `iotcore simulate: a fleet of simulated vehicles sending to a running platform

  iotcore simulate [--devices 10] [--rate R] [--protocol ${Object.keys(SENDERS).join('|')}] [--duration S]
                   [--faults 1] [--prefix sim] [--seed 1]

  --devices N    vehicles, registered as devices PREFIX-0001... (reused with a new token when they exist)
  --rate R       readings per second, all vehicles together (default: one per vehicle per second)
  --duration S   seconds to run (default: until Ctrl-C); then waits for the last acks and prints a summary
  --faults K     vehicles per fault kind (0: none): a GPS stuck at 0,0, a GPS jump, a device that goes silent,
                 a gap in the sequence numbers; the summary says which, for the organizer to catch

Where the platform is: IOTCORE_URL (http://localhost:8080), IOTCORE_MQTT_PORT (1883), IOTCORE_ADMIN_TOKEN (or
the admin-token file of IOTCORE_DATA_DIR, ./data).`

/** Faults, each on its own vehicles, at fixed reading counts so a short run shows them all. */
export const FAULTS = {
  gps_zero: 'readings 5 to 9 with lat 0, lon 0 (a GPS without a fix)',
  gps_jump: 'reading 7 about 170 km north, then back (a GPS jump)',
  silent: 'stops sending after reading 10 (a silent device)',
  seq_gap: 'skips 5 sequence numbers after reading 6 (a gap)',
} as const
export type Fault = keyof typeof FAULTS

export interface SimulateIo {
  out(line: string): void
  err(text: string): void
  isTTY: boolean
  env: Record<string, string | undefined>
  /** Stops the run early (Ctrl-C), as --duration would. */
  signal?: AbortSignal
}

export interface Summary {
  protocol: string
  devices: Array<SimDevice & { name: string; fault?: Fault }>
  sent: number
  acked: number
  refused: number
  unanswered: number
  seconds: number
  refusals: Record<string, number>
}

/** Athens, where the README's examples drive. */
const ORIGIN = { lat: 37.9838, lon: 23.7275 }
const TICK_MS = 50
const DRAIN_MS = 10_000

class Usage extends Error {}

async function admin(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : undefined }
}

/** Devices named PREFIX-0001..N: created, or reused with a rotated token (tokens are shown only once). */
async function register(
  base: string,
  token: string,
  prefix: string,
  n: number,
  progress: (done: number) => void,
): Promise<Array<SimDevice & { name: string }>> {
  const existing = new Map<string, string>()
  let cursor: string | undefined
  do {
    const r = await admin(
      base,
      token,
      'GET',
      `/devices?limit=10000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    )
    if (r.status === 401) throw new IotError('IOT_ERR_UNAUTHORIZED', `${base} refused the admin token`)
    if (r.status !== 200)
      throw new Error(`GET ${base}/api/v1/devices answered ${r.status}: ${JSON.stringify(r.body)}`)
    for (const d of r.body.devices as Array<{ id: string; name: string }>) existing.set(d.name, d.id)
    cursor = r.body.next ?? undefined
  } while (cursor)
  const width = Math.max(4, String(n).length)
  const out: Array<SimDevice & { name: string }> = new Array(n)
  let done = 0
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      const name = `${prefix}-${String(i + 1).padStart(width, '0')}`
      const id = existing.get(name)
      if (id) {
        const r = await admin(base, token, 'POST', `/devices/${id}/token`)
        if (r.status !== 200)
          throw new Error(`rotating the token of ${name}: ${r.status} ${JSON.stringify(r.body)}`)
        out[i] = { name, id, token: r.body.token }
      } else {
        const r = await admin(base, token, 'POST', '/devices', { name, attributes: { simulated: true } })
        if (r.status !== 201) throw new Error(`creating ${name}: ${r.status} ${JSON.stringify(r.body)}`)
        out[i] = { name, id: r.body.id, token: r.body.token }
      }
      progress(++done)
    }
  }
  await Promise.all(Array.from({ length: Math.min(8, n) }, worker))
  return out
}

export async function runSimulate(argv: string[], io: SimulateIo): Promise<Summary | number> {
  let values: Record<string, string | boolean | undefined>
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        devices: { type: 'string' },
        rate: { type: 'string' },
        protocol: { type: 'string' },
        duration: { type: 'string' },
        faults: { type: 'string' },
        prefix: { type: 'string' },
        seed: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${SIMULATE_USAGE}\n`)
    return 1
  }
  if (values.help) {
    io.out(SIMULATE_USAGE)
    return 0
  }
  try {
    return await simulate(values, io)
  } catch (err) {
    if (err instanceof Usage) {
      io.err(`${err.message}\n\n${SIMULATE_USAGE}\n`)
      return 1
    }
    if (err instanceof IotError) {
      io.err(`${err.code}: ${err.message}\n`)
      return 1
    }
    throw err
  }
}

async function simulate(
  values: Record<string, string | boolean | undefined>,
  io: SimulateIo,
): Promise<Summary> {
  const num = (flag: string, def: number, min: number) => {
    const raw = values[flag] as string | undefined
    if (raw === undefined) return def
    const n = Number(raw)
    if (!Number.isFinite(n) || n < min)
      throw new Usage(`--${flag} ${raw}: expected a number of at least ${min}`)
    return n
  }
  const n = Math.floor(num('devices', 10, 1))
  const rate = num('rate', n, 0.01)
  const duration = values.duration === undefined ? undefined : num('duration', 0, 1)
  const faultsPer = Math.floor(num('faults', 1, 0))
  const seed = Math.floor(num('seed', 1, 0))
  const protocol = (values.protocol as string | undefined) ?? 'mqtt'
  const prefix = (values.prefix as string | undefined) ?? 'sim'
  const factory = SENDERS[protocol]
  if (!factory) throw new Usage(`--protocol ${protocol}: this build sends ${Object.keys(SENDERS).join(', ')}`)
  const config = loadClientConfig(io.env)
  if (!config.adminToken)
    throw new Usage(
      'no admin token: set IOTCORE_ADMIN_TOKEN, or run where IOTCORE_DATA_DIR (./data) has admin-token',
    )

  const line = (text: string) => (io.isTTY ? io.err(`\r\x1b[2K${text}`) : io.err(`${text}\n`))
  const registered = await register(config.url, config.adminToken, prefix, n, (done) => {
    if (io.isTTY || done === n) line(`registering devices ${done}/${n}`)
  })
  if (io.isTTY) io.err('\n')
  // Faults on the first vehicles, K of each kind, when the fleet is large enough to keep most of it healthy.
  const kinds = Object.keys(FAULTS) as Fault[]
  const devices = registered.map((d, i) => ({
    ...d,
    fault:
      faultsPer > 0 && i < kinds.length * faultsPer && n > kinds.length ? kinds[i % kinds.length] : undefined,
  }))

  let acked = 0
  let refused = 0
  const refusals: Record<string, number> = {}
  const sender = factory(
    { url: config.url, mqttHost: new URL(config.url).hostname, mqttPort: config.mqttPort },
    devices,
    {
      acked: () => acked++,
      refused: (_token, why) => {
        refused++
        refusals[why] = (refusals[why] ?? 0) + 1
      },
    },
  )
  await sender.start()

  const run = Date.now().toString(36)
  const period = (n / rate) * 1000
  const t0 = Date.now()
  const vehicles = devices.map(
    (_, i) =>
      new Vehicle(
        {
          lat: ORIGIN.lat + (prng(seed * 7919 + i)() - 0.5) * 0.1,
          lon: ORIGIN.lon + (prng(seed * 104729 + i)() - 0.5) * 0.1,
        },
        prng(seed * 1_000_003 + i),
      ),
  )
  const due = devices.map((_, i) => t0 + (i / n) * period)
  const last = devices.map(() => t0)
  const seq = devices.map(() => 0)
  const count = devices.map(() => 0)
  let sent = 0
  let token = 0

  const send = (i: number, now: number) => {
    const v = vehicles[i]
    v.step((now - last[i]) / 1000)
    last[i] = now
    const fault = devices[i].fault
    const k = ++count[i]
    if (fault === 'silent' && k > 10) return
    if (fault === 'seq_gap' && k === 7) seq[i] += 5
    const s = ++seq[i]
    const values = v.values()
    if (fault === 'gps_zero' && k >= 5 && k <= 9) Object.assign(values, { lat: 0, lon: 0 })
    if (fault === 'gps_jump' && k === 7)
      Object.assign(values, { lat: Math.round(((values.lat as number) + 1.5) * 1e6) / 1e6, lon: values.lon })
    sent++
    sender.send(i, ++token, { ts: now, msgId: `${run}-${s}`, seq: s, ...values })
  }

  let lastAcked = 0
  let lastAt = t0
  const progress = () => {
    const now = Date.now()
    const r = ((acked - lastAcked) * 1000) / Math.max(now - lastAt, 1)
    lastAcked = acked
    lastAt = now
    line(
      `sent ${sent}  acked ${acked}  refused ${refused}  rate ${r.toFixed(1)}/s  pending ${sender.pending}  connected ${sender.connected}/${n}  ${Math.round((now - t0) / 1000)} s`,
    )
  }

  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = Date.now()
      if ((duration !== undefined && now - t0 >= duration * 1000) || io.signal?.aborted) {
        clearInterval(tick)
        clearInterval(show)
        resolve()
        return
      }
      for (let i = 0; i < n; i++) {
        // Catch up at most a few readings: a stalled loop does not make a burst of stale ones.
        for (let c = 0; due[i] <= now && c < 3; c++) {
          send(i, now)
          due[i] += period
        }
        if (due[i] <= now) due[i] = now + period
      }
    }, TICK_MS)
    const show = setInterval(progress, 1000)
  })
  const seconds = (Date.now() - t0) / 1000
  // The last acks: a device's readings already handed over are still its to deliver.
  const drainUntil = Date.now() + DRAIN_MS
  while (sender.pending > 0 && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 50))
  progress()
  if (io.isTTY) io.err('\n')
  const unanswered = sender.pending
  await sender.stop()

  const summary: Summary = { protocol, devices, sent, acked, refused, unanswered, seconds, refusals }
  const out = [
    `simulated ${n} vehicles over ${protocol} for ${seconds.toFixed(1)} s`,
    `  readings: sent ${sent}, acked ${acked}, refused ${refused}, unanswered ${unanswered}`,
    `  rate: ${(acked / seconds).toFixed(1)} acked/s`,
  ]
  for (const [why, c] of Object.entries(refusals)) out.push(`  refused ${c}: ${why}`)
  const faulty = devices.filter((d) => d.fault)
  if (faulty.length) {
    out.push('  faults injected (the organizer should report these):')
    for (const d of faulty) out.push(`    ${d.name} (${d.id}): ${d.fault}, ${FAULTS[d.fault!]}`)
  }
  for (const l of out) io.out(l)
  return summary
}
