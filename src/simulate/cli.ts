import { parseArgs } from 'node:util'
import { loadClientConfig } from '../config/index.js'
import { IotError } from '../errors.js'
import { type Catch, FAULTS, type Fault, type Since, catchFaults, inject } from './faults.js'
import { SENDERS, type SimDevice } from './senders.js'
import { prng } from '../lib/prng.js'
import { Vehicle } from './vehicle.js'

export const SIMULATE_USAGE = `iotcore simulate: a fleet of simulated vehicles sending to a running platform

  iotcore simulate [--devices 10] [--rate R] [--protocol ${Object.keys(SENDERS).join('|')}] [--duration S]
                   [--faults 1] [--wait 15] [--prefix sim] [--seed 1]

  --devices N    vehicles, registered as devices PREFIX-0001... with an IMEI (reused with a new token when
                 they exist)
  --rate R       readings per second, all vehicles together (default: one per vehicle per second)
  --protocol P   mqtt (default), http, teltonika (TCP, Codec 8 Extended), osmand (Traccar Client's HTTP form),
                 jsonl (JSON lines over TCP)
  --duration S   seconds to run (default: until Ctrl-C); then waits for the last acks and prints a summary
  --faults K     vehicles per fault kind (0: none), for the organizer to catch:
${Object.entries(FAULTS)
  .map(([k, v]) => `                   ${k}: ${v}`)
  .join('\n')}
  --wait S       after the last acks, seconds to wait for the platform to report the faults caught (the
                 alerts, flagged readings and gaps, asked every second until all are there)

Where the platform is: IOTCORE_URL (http://localhost:8080), IOTCORE_MQTT_PORT (1883), IOTCORE_TELTONIKA_PORT
(5027), IOTCORE_OSMAND_PORT (5055), IOTCORE_JSONL_PORT (5060) on the URL's host, IOTCORE_ADMIN_TOKEN (or the
admin-token file of IOTCORE_DATA_DIR, ./data).`

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
  /** What the platform caught of each fault injected. */
  faults: Catch[]
}

/** Athens, where the README's examples drive. */
const ORIGIN = { lat: 37.9838, lon: 23.7275 }
const TICK_MS = 50
const DRAIN_MS = 10_000

class Usage extends Error {}
/** The platform said no to the simulator itself (a device it cannot use, an API error): said, and exit 1. */
class Failed extends Error {}

/**
 * The IMEI of device `i` of a fleet: 15 digits, 35 (as Teltonika's examples begin), six from the prefix, seven
 * from the index, so that fleets of different prefixes do not share one.
 */
function imeiOf(prefix: string, i: number): string {
  let h = 0x811c9dc5
  for (let k = 0; k < prefix.length; k++) h = Math.imul(h ^ prefix.charCodeAt(k), 0x01000193)
  return `35${String((h >>> 0) % 1_000_000).padStart(6, '0')}${String(i + 1).padStart(7, '0')}`
}

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

/**
 * Devices named PREFIX-0001..N with their IMEI: created, or reused with a rotated token (tokens are shown only
 * once). One registered before the simulator gave devices an IMEI has none, which `needImei` refuses.
 */
async function register(
  base: string,
  token: string,
  prefix: string,
  n: number,
  needImei: string | undefined,
  progress: (done: number) => void,
): Promise<Array<SimDevice & { name: string }>> {
  const existing = new Map<string, { id: string; imei: string | null }>()
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
      throw new Failed(`GET ${base}/api/v1/devices answered ${r.status}: ${JSON.stringify(r.body)}`)
    for (const d of r.body.devices as Array<{ id: string; name: string; imei: string | null }>)
      existing.set(d.name, d)
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
      const found = existing.get(name)
      if (found) {
        if (!found.imei && needImei)
          throw new Failed(
            `${name} was registered without an imei, which ${needImei}: give the fleet another --prefix`,
          )
        const r = await admin(base, token, 'POST', `/devices/${found.id}/token`)
        if (r.status !== 200)
          throw new Failed(`rotating the token of ${name}: ${r.status} ${JSON.stringify(r.body)}`)
        out[i] = { name, id: found.id, token: r.body.token, imei: found.imei ?? '' }
      } else {
        const imei = imeiOf(prefix, i)
        const r = await admin(base, token, 'POST', '/devices', {
          name,
          imei,
          attributes: { simulated: true },
        })
        if (r.status !== 201) throw new Failed(`creating ${name}: ${r.status} ${JSON.stringify(r.body)}`)
        out[i] = { name, id: r.body.id, token: r.body.token, imei }
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
        wait: { type: 'string' },
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
    if (err instanceof Failed) {
      io.err(`${err.message}\n`)
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
  const wait = num('wait', 15, 0)
  const seed = Math.floor(num('seed', 1, 0))
  const protocol = (values.protocol as string | undefined) ?? 'mqtt'
  const prefix = (values.prefix as string | undefined) ?? 'sim'
  const proto = SENDERS[protocol]
  if (!proto) throw new Usage(`--protocol ${protocol}: this build sends ${Object.keys(SENDERS).join(', ')}`)
  const config = loadClientConfig(io.env)
  if (!config.adminToken)
    throw new Usage(
      'no admin token: set IOTCORE_ADMIN_TOKEN, or run where IOTCORE_DATA_DIR (./data) has admin-token',
    )
  const api = {
    get: (path: string) => admin(config.url, config.adminToken!, 'GET', path),
  }

  const line = (text: string) => (io.isTTY ? io.err(`\r\x1b[2K${text}`) : io.err(`${text}\n`))
  const registered = await register(config.url, config.adminToken, prefix, n, proto.needsImei, (done) => {
    if (io.isTTY || done === n) line(`registering devices ${done}/${n}`)
  })
  if (io.isTTY) io.err('\n')
  // Faults on the first vehicles, K of each kind the protocol can carry, when the fleet is large enough to keep
  // most of it healthy.
  const kinds = (Object.keys(FAULTS) as Fault[]).filter((k) => k !== 'seq_gap' || !proto.noSeq)
  const devices = registered.map((d, i) => ({
    ...d,
    fault:
      faultsPer > 0 && i < kinds.length * faultsPer && n > kinds.length ? kinds[i % kinds.length] : undefined,
  }))

  let acked = 0
  let refused = 0
  const refusals: Record<string, number> = {}
  const sender = proto.create(
    {
      url: config.url,
      host: new URL(config.url).hostname.replace(/^\[(.*)\]$/, '$1'),
      mqttPort: config.mqttPort,
      teltonikaPort: config.teltonikaPort,
      osmandPort: config.osmandPort,
      jsonlPort: config.jsonlPort,
    },
    devices,
    {
      acked: () => acked++,
      refused: (_token, why) => {
        refused++
        refusals[why] = (refusals[why] ?? 0) + 1
      },
    },
  )
  // The platform's clock, against which its alerts and gaps are dated, and what it says of its thresholds.
  const info = await api.get('/console').catch(() => undefined)
  const since: Since = {
    server: info?.status === 200 && typeof info.body.now === 'number' ? info.body.now : Date.now(),
    local: Date.now(),
  }
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
  // Each reading of a device a ms after the one before at least: protocols whose msgId is the time (OsmAnd) or
  // the time and the bytes (Teltonika) would take two readings of one ms for one.
  const lastTs = devices.map(() => 0)
  const seq = devices.map(() => 0)
  const count = devices.map(() => 0)
  let sent = 0
  let token = 0

  const send = (i: number, now: number) => {
    const v = vehicles[i]
    v.step((now - last[i]) / 1000)
    last[i] = now
    const values: Record<string, unknown> = v.values()
    const skip = inject(devices[i].fault, ++count[i], values)
    if (skip === false) return
    seq[i] += skip
    const s = ++seq[i]
    const ts = (lastTs[i] = Math.max(now, lastTs[i] + 1))
    sent++
    sender.send(i, ++token, { ts, msgId: `${run}-${s}`, seq: s, ...values })
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

  const out = [
    `simulated ${n} vehicles over ${protocol} for ${seconds.toFixed(1)} s`,
    `  readings: sent ${sent}, acked ${acked}, refused ${refused}, unanswered ${unanswered}`,
    `  rate: ${(acked / seconds).toFixed(1)} acked/s`,
  ]
  for (const [why, c] of Object.entries(refusals)) out.push(`  refused ${c}: ${why}`)
  for (const l of out) io.out(l)

  // What the organizer made of the faults, once every reading is in: asked until all are caught or --wait.
  const faulty = devices.flatMap((d, i) =>
    d.fault ? [{ id: d.id, name: d.name, fault: d.fault, readings: count[i] }] : [],
  )
  let caught: Catch[] = []
  if (faulty.length) {
    try {
      caught = await catchFaults(
        api,
        faulty,
        since,
        { offlineAfterSeconds: info?.status === 200 ? info.body.offlineAfterSeconds : undefined },
        wait,
        (c, total) => {
          if (c < total || io.isTTY) line(`waiting for the platform to catch the faults: ${c}/${total}`)
        },
      )
      if (io.isTTY) io.err('\n')
      io.out(`  faults caught: ${caught.filter((c) => c.caught).length}/${caught.length}`)
      for (const c of caught)
        io.out(`    ${c.device.name} ${c.device.fault}: ${c.caught ? '' : 'NOT CAUGHT: '}${c.detail}`)
    } catch (err) {
      if (io.isTTY) io.err('\n')
      io.out(`  faults: the platform could not be asked which it caught: ${(err as Error).message}`)
    }
  }
  if (faulty.length && proto.noSeq) io.out(`  seq_gap not injected over ${protocol}: ${proto.noSeq}`)
  return { protocol, devices, sent, acked, refused, unanswered, seconds, refusals, faults: caught }
}
