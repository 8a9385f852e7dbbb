/**
 * A large fleet written straight into a database with COPY, for the console's scale tests and its bench:
 * `devices` live devices spread over a few regions (each with a latest position and values), and one of them
 * with a reading every `everyMs` over the last `spanMs` (by default a week of one-second readings: 604,800).
 */
import { once } from 'node:events'
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'

export interface FleetOptions {
  devices?: number
  spanMs?: number
  everyMs?: number
}

export interface LoadedFleet {
  ids: string[]
  /** The device with the long history. */
  busy: string
  readings: number
  /** ms since the epoch of its first and last reading. */
  from: number
  to: number
}

/** Region centres (lat, lon) the devices are spread around, so the map shows clusters. */
const REGIONS: Array<[number, number]> = [
  [37.98, 23.72],
  [48.86, 2.35],
  [52.52, 13.4],
  [40.42, -3.7],
  [41.9, 12.5],
  [51.5, -0.12],
  [40.71, -74.0],
  [34.05, -118.24],
  [-23.55, -46.63],
  [35.68, 139.69],
]

/** Lines of COPY's text format are written in chunks of this many rows, waiting for the stream to drain. */
const CHUNK = 5000

/** Deterministic noise in [0, 1): the same fleet every run. */
function noise(i: number, k: number): number {
  const x = Math.sin(i * 12.9898 + k * 78.233) * 43758.5453
  return x - Math.floor(x)
}

async function copy(
  client: pg.Client,
  sql: string,
  rows: (i: number) => string,
  count: number,
): Promise<void> {
  const stream = client.query(copyFrom(sql))
  const done = new Promise<void>((resolve, reject) => {
    stream.on('finish', resolve)
    stream.on('error', reject)
  })
  for (let i = 0; i < count; i += CHUNK) {
    let text = ''
    for (let j = i; j < Math.min(count, i + CHUNK); j++) text += rows(j)
    if (!stream.write(text)) await once(stream, 'drain')
  }
  stream.end()
  await done
}

export async function loadFleet(databaseUrl: string, opts: FleetOptions = {}): Promise<LoadedFleet> {
  const n = opts.devices ?? 10_000
  const span = opts.spanMs ?? 7 * 86_400_000
  const every = opts.everyMs ?? 1000
  const readings = Math.floor(span / every)
  const to = Math.floor(Date.now() / every) * every
  const from = to - (readings - 1) * every
  const ids = Array.from({ length: n }, (_, i) => `dfleet${String(i).padStart(6, '0')}`)
  const busy = ids[0]
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const created = new Date(from - 86_400_000).toISOString()
    await copy(
      client,
      'COPY devices (id, name, token_hash, created_at, last_seen_at, latest, latest_ts_max) FROM STDIN',
      (i) => {
        const [lat0, lon0] = REGIONS[i % REGIONS.length]
        // The busy device was seen last at its last reading; the others over the last two hours, so some are
        // online and some offline.
        const seen = i === 0 ? to : to - Math.floor(noise(i, 1) * 7_200_000)
        const latest = {
          lat: { ts: seen, value: +(lat0 + (noise(i, 2) - 0.5) * 2).toFixed(5) },
          lon: { ts: seen, value: +(lon0 + (noise(i, 3) - 0.5) * 3).toFixed(5) },
          speed: { ts: seen, value: Math.round(noise(i, 4) * 1200) / 10 },
          rpm: { ts: seen, value: Math.round(800 + noise(i, 5) * 2400) },
        }
        const name = `vehicle-${String(i).padStart(5, '0')}`
        return `${ids[i]}\t${name}\thash-${ids[i]}\t${created}\t${new Date(seen).toISOString()}\t${JSON.stringify(latest)}\t${seen}\n`
      },
      n,
    )
    const pk = (await client.query('SELECT pk FROM devices WHERE id = $1', [busy])).rows[0].pk
    await copy(
      client,
      'COPY telemetry (device_pk, msg_id, ts, received_at, values) FROM STDIN',
      (j) => {
        const ts = from + j * every
        const iso = new Date(ts).toISOString()
        // A day's cycle and a faster wobble: a chart with a shape at every zoom.
        const speed = 60 + 40 * Math.sin((2 * Math.PI * ts) / 86_400_000) + 10 * Math.sin(ts / 600_000)
        const rpm = 1500 + speed * 20 + 200 * noise(j, 6)
        return `${pk}\t${j}\t${iso}\t${iso}\t{"speed": ${speed.toFixed(2)}, "rpm": ${rpm.toFixed(0)}}\n`
      },
      readings,
    )
    await client.query('ANALYZE devices; ANALYZE telemetry')
  } finally {
    await client.end()
  }
  return { ids, busy, readings, from, to }
}
