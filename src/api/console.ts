import compress from '@fastify/compress'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { type TSchema, Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifySchema } from 'fastify'
import type { Config } from '../config/index.js'
import { IotError } from '../errors.js'
import type { Store } from '../store/index.js'
import { keysetPage } from './cursor.js'
import { parseInterval, parseRange } from './index.js'
import { STREAM_TOPICS, type StreamClient, StreamHub, type StreamTopic } from './stream.js'

/** A stream whose unsent events pass this is too slow for what it asked: it is closed, and reconnects. */
const MAX_STREAM_BUFFER = 1024 * 1024
/** A chart's keys: each is three columns of one scan. */
const MAX_SERIES_KEYS = 8
/** Devices one stream may follow by id (a page showing more follows them all). */
const MAX_STREAM_DEVICES = 100
/** Buckets one series may have, as the telemetry route allows. */
const MAX_BUCKETS = 100_000
/** A chart's default range when from is absent: the last hour. */
const DEFAULT_RANGE_MS = 3_600_000
/** Bucket widths a chart chooses from: the smallest that keeps the range within the points asked for. */
const NICE_MS = [
  1, 10, 100, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
  3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000, 172_800_000, 604_800_000,
]

export interface ConsoleDeps {
  store: Store
  config: Config
  /** The ports this process bound (a configured 0 is a free port): the HTTP one, and MQTT's if it runs here. */
  ports(): { http: number; mqtt: number | undefined }
}

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()])
const Port = Nullable(Type.Integer({ description: 'null: off' }))

const ConsoleInfo = Type.Object({
  now: Type.Integer({ description: "the server's clock, ms since the epoch" }),
  offlineAfterSeconds: Type.Integer(),
  map: Type.Object({
    tiles: Nullable(Type.String({ description: 'IOTCORE_MAP_TILES; null: the bundled world outline only' })),
    attribution: Nullable(Type.String()),
  }),
  listeners: Type.Object({
    http: Type.Integer(),
    mqtt: Port,
    mqttWebSocket: Nullable(Type.String({ description: 'path of MQTT over WebSocket on the HTTP port' })),
    teltonika: Port,
    osmand: Port,
    jsonl: Port,
    signal: Port,
  }),
  features: Type.Object({ alerts: Type.Boolean({ description: 'GET /api/v1/alerts is served' }) }),
})

const FleetDevice = Type.Object({
  id: Type.String(),
  name: Type.String(),
  imei: Nullable(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  lastSeenAt: Nullable(Type.String({ format: 'date-time' })),
  latest: Type.Record(Type.String(), Type.Object({ ts: Type.Integer(), value: Type.Unknown() })),
})

const Column = Type.Array(Nullable(Type.Number()))

const SeriesQuery = Type.Object({
  keys: Type.String({ minLength: 1, description: `comma-separated value keys, at most ${MAX_SERIES_KEYS}` }),
  from: Type.Optional(
    Type.String({ description: 'inclusive, as for telemetry; default: an hour before to' }),
  ),
  to: Type.Optional(Type.String({ description: 'exclusive, as for telemetry; default: now' })),
  interval: Type.Optional(
    Type.String({ pattern: '^[0-9]+(ms|s|m|h|d|w)$', description: 'bucket size; default: from points' }),
  ),
  points: Type.Integer({
    minimum: 10,
    maximum: 10_000,
    default: 1000,
    description:
      'without interval: the bucket size is the smallest round one giving at most this many buckets',
  }),
  sample: Type.Boolean({
    default: false,
    description:
      "true: each bucket's first reading instead of its aggregate (avg = min = max): an index probe per bucket, " +
      'quick whatever the rows, for a chart to show while the aggregate is computed',
  }),
})

const StreamQuery = Type.Object({
  topics: Type.String({
    default: STREAM_TOPICS.join(','),
    description: `comma-separated, of ${STREAM_TOPICS.join(', ')}`,
  }),
  devices: Type.Optional(
    Type.String({
      description: `only these devices' telemetry (comma-separated, at most ${MAX_STREAM_DEVICES})`,
    }),
  ),
})

function route<S extends FastifySchema>(summary: string, schema: S) {
  return { schema: { security: [{ admin: [] }], tags: ['console'], summary, ...schema } }
}

const list = (raw: string) => [
  ...new Set(
    raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  ),
]

/** The smallest round bucket width that puts [from, to) in at most `points` buckets. */
export function chooseInterval(from: number, to: number, points: number): number {
  const want = (to - from) / points
  return (
    NICE_MS.find((ms) => ms >= want) ??
    Math.ceil(want / NICE_MS[NICE_MS.length - 1]) * NICE_MS[NICE_MS.length - 1]
  )
}

/**
 * What the web console reads beyond the resource routes, under /api/v1 with the admin token: its settings, the
 * fleet with latest values, charts' series, and the live stream.
 */
export async function consoleApi(root: FastifyInstance, deps: ConsoleDeps): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>()
  const { store, config } = deps
  const hub = new StreamHub(store, app.log)
  // Open streams would hold the server's close: they end first.
  app.addHook('preClose', () => hub.stop())
  const alertsUrl = `${app.prefix}/alerts`

  app.get('/console', route('Settings of the web console', { response: { 200: ConsoleInfo } }), async () => {
    const ports = deps.ports()
    const gateway = config.roles.includes('gateway')
    return {
      now: Date.now(),
      offlineAfterSeconds: config.offlineAfterSeconds,
      map: { tiles: config.mapTiles ?? null, attribution: config.mapAttribution ?? null },
      listeners: {
        http: ports.http,
        mqtt: ports.mqtt ?? config.mqttPort,
        mqttWebSocket: gateway ? '/mqtt' : null,
        teltonika: config.teltonikaPort,
        osmand: config.osmandPort,
        jsonl: config.jsonlPort,
        signal: config.signalPort,
      },
      // Alerts come with the organizer's routes; until a build has them, the console says so.
      features: { alerts: app.hasRoute({ method: 'GET', url: alertsUrl }) },
    }
  })

  // Lists and series are large and repetitive JSON: compressed for a console away from the server.
  await app.register(async (big) => {
    await big.register(compress, { global: true, encodings: ['br', 'gzip'], threshold: 1024 })
    const r = big.withTypeProvider<TypeBoxTypeProvider>()

    r.get(
      '/fleet',
      route('Live devices with their latest values, a page at a time, in creation order', {
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 }),
          cursor: Type.Optional(
            Type.String({ maxLength: 1024, description: 'the `next` of the page before' }),
          ),
        }),
        response: {
          200: Type.Object({ devices: Type.Array(FleetDevice), next: Nullable(Type.String()) }),
        },
      }),
      async (req, reply) => {
        const { limit, cursor } = req.query
        const page = await keysetPage(req, reply, { query: ['fleet'], cursor }, (after) =>
          store.console.fleet(limit, after),
        )
        return { devices: page.items, next: page.next }
      },
    )

    r.get(
      '/devices/:id/series',
      route("A device's keys over a range, bucketed, as aligned columns (avg, min, max per key)", {
        description:
          'One scan for every key; the bucket width is `interval`, or else the smallest round width that ' +
          'gives at most `points` buckets (so a week of one-second readings comes back as ~1000 points). ' +
          'Buckets without a number under any key are left out. With sample=true: one index probe per bucket ' +
          "for its first reading instead (every bucket that has a reading), quick whatever the bucket's rows.",
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }),
        querystring: SeriesQuery,
        response: {
          200: Type.Object({
            intervalMs: Type.Integer(),
            sampled: Type.Boolean({ description: "true: each bucket's first reading, not an aggregate" }),
            from: Type.Integer(),
            to: Type.Integer(),
            ts: Type.Array(Type.Integer()),
            keys: Type.Record(Type.String(), Type.Object({ avg: Column, min: Column, max: Column })),
          }),
        },
      }),
      async (req) => {
        const q = req.query
        const range = parseRange(q)
        const to = range.to ?? Date.now()
        const from = range.from ?? to - DEFAULT_RANGE_MS
        if (from >= to) throw new IotError('IOT_ERR_BAD_REQUEST', 'from must be before to')
        const keys = list(q.keys)
        if (keys.length === 0 || keys.length > MAX_SERIES_KEYS)
          throw new IotError('IOT_ERR_BAD_REQUEST', `keys must name 1 to ${MAX_SERIES_KEYS} value keys`)
        const intervalMs = q.interval ? parseInterval(q.interval) : chooseInterval(from, to, q.points)
        if ((to - from) / intervalMs > MAX_BUCKETS)
          throw new IotError(
            'IOT_ERR_BAD_REQUEST',
            `more than ${MAX_BUCKETS} buckets: widen the interval or narrow from/to`,
          )
        if (!(await store.devices.get(req.params.id)))
          throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', req.params.id)
        const query = { deviceId: req.params.id, keys, from, to, intervalMs }
        const s = q.sample ? await store.console.sample(query) : await store.console.series(query)
        return { intervalMs, sampled: q.sample, from, to, ...s }
      },
    )
  })

  app.get(
    '/stream',
    route('Server-Sent Events of what was stored and what changed, as it is committed', {
      description:
        'Events: `ready` once listening (read the page data after it), `telemetry` [{id, lastSeenAt, ' +
        'latest}] read after the commit of the batches that stored them, `status` [{id, device}] (device ' +
        'null: retired or deleted), `quarantine` {added}, `ingest` {stored, seconds} each second, `alerts` {} ' +
        '(alerts changed: read GET /alerts again), `resync` ' +
        'when notifications may have been missed (read the page data again). A client that does not read ' +
        'what it is sent is disconnected.',
      querystring: StreamQuery,
      produces: ['text/event-stream'],
    }),
    async (req, reply) => {
      const topics = list(req.query.topics)
      for (const t of topics)
        if (!(STREAM_TOPICS as readonly string[]).includes(t))
          throw new IotError('IOT_ERR_BAD_REQUEST', `topic '${t}' is not one of ${STREAM_TOPICS.join(', ')}`)
      const devices = req.query.devices === undefined ? undefined : list(req.query.devices)
      if (devices && devices.length > MAX_STREAM_DEVICES)
        throw new IotError('IOT_ERR_BAD_REQUEST', `devices may name at most ${MAX_STREAM_DEVICES}`)
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        // nginx would otherwise buffer the stream
        'x-accel-buffering': 'no',
        // A stream holds its connection to the end; closed with it, it cannot keep a stopping server waiting
        // for an idle keep-alive connection.
        connection: 'close',
      })
      let open = true
      const write = (s: string) => {
        if (!open) return
        if (res.writableLength > MAX_STREAM_BUFFER) {
          open = false
          req.log.warn({ buffered: res.writableLength }, 'live stream: client too slow, disconnected')
          res.destroy()
          return
        }
        res.write(s)
      }
      const client: StreamClient = {
        topics: new Set(topics as StreamTopic[]),
        devices: devices && new Set(devices),
        send: (event, data) => write(`event: ${event}\ndata: ${data}\n\n`),
        ping: () => write(': ping\n\n'),
        end: () => {
          open = false
          res.end()
        },
      }
      let detach: (() => void) | undefined
      res.on('close', () => {
        open = false
        detach?.()
      })
      try {
        detach = await hub.attach(client)
      } catch {
        res.end()
        return
      }
      if (!open) return detach()
      write(`retry: 2000\nevent: ready\ndata: ${JSON.stringify({ now: Date.now() })}\n\n`)
    },
  )
}
