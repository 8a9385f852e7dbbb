import { createHash, timingSafeEqual } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { Devices } from '../devices/index.js'
import { IotError } from '../errors.js'
import { acceptPayload, correctedPayload } from '../gateway/accept.js'
import type { Metrics } from '../metrics/index.js'
import type { Queue } from '../queue/types.js'
import { deeperThan } from '../readings/index.js'
import type { Aggregate, Store } from '../store/index.js'
import {
  Accepted,
  CreateDevice,
  CreatedDevice,
  DeviceBody,
  IdParam,
  Latest,
  Paging,
  QuarantineItem,
  QuarantineQuery,
  ReplayBody,
  TelemetryQuery,
  TelemetryResult,
} from './schemas.js'

/** Attributes are free-form JSON, but stored through JSON.stringify, which recurses: far deeper overflows it. */
const MAX_ATTRIBUTE_DEPTH = 32
/** Aggregation over more buckets than this is a mistake in the interval, and a slow query. */
const MAX_BUCKETS = 100_000
const INTERVAL_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const

export interface ApiDeps {
  store: Store
  devices: Devices
  queue: Queue
  metrics: Metrics
  adminToken: string
}

const sha = (s: string) => createHash('sha256').update(s).digest()

/** Parses `from`/`to`: ms since the epoch or ISO 8601. */
export function parseTime(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined || raw === '') return undefined
  const n = /^-?\d+$/.test(raw) ? Number(raw) : Date.parse(raw)
  if (!Number.isFinite(n))
    throw new IotError('IOT_ERR_BAD_REQUEST', `${name}=${raw} is neither ms since the epoch nor ISO 8601`)
  return n
}

export function parseInterval(raw: string): number {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(raw)
  if (!m)
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      `interval=${raw}: use a number and a unit, e.g. 30s, 1m, 1h, 1d`,
    )
  const ms = Number(m[1]) * INTERVAL_MS[m[2] as keyof typeof INTERVAL_MS]
  if (ms < 1) throw new IotError('IOT_ERR_BAD_REQUEST', 'interval must be at least 1ms')
  return ms
}

/** The admin REST API under /api/v1. */
export async function api(root: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>()
  const { store, devices, queue, metrics } = deps
  const adminHash = sha(deps.adminToken)

  app.addHook('onRequest', async (req) => {
    const h = req.headers.authorization
    const token = h?.startsWith('Bearer ') ? h.slice(7).trim() : undefined
    if (!token) throw new IotError('IOT_ERR_UNAUTHORIZED', 'send Authorization: Bearer <admin token>')
    if (!timingSafeEqual(sha(token), adminHash))
      throw new IotError('IOT_ERR_UNAUTHORIZED', 'this is not the admin token')
  })

  const admin = { security: [{ admin: [] }] }

  app.post(
    '/devices',
    {
      schema: {
        ...admin,
        tags: ['devices'],
        summary: 'Register a device',
        body: CreateDevice,
        response: { 201: CreatedDevice },
      },
    },
    async (req, reply) => {
      if (deeperThan(req.body.attributes, MAX_ATTRIBUTE_DEPTH)) {
        throw new IotError('IOT_ERR_BAD_REQUEST', `attributes nest deeper than ${MAX_ATTRIBUTE_DEPTH} levels`)
      }
      return reply.code(201).send(await devices.create(req.body))
    },
  )

  app.get(
    '/devices',
    {
      schema: {
        ...admin,
        tags: ['devices'],
        summary: 'List devices with last seen and online status',
        querystring: Paging,
        response: {
          200: Type.Object({
            devices: Type.Array(Type.Ref(DeviceBody)),
            limit: Type.Integer(),
            offset: Type.Integer(),
          }),
        },
      },
    },
    async (req) => ({ devices: await devices.list(req.query.limit, req.query.offset), ...req.query }),
  )

  app.get(
    '/devices/:id',
    {
      schema: {
        ...admin,
        tags: ['devices'],
        summary: 'Read a device',
        params: IdParam,
        response: { 200: Type.Ref(DeviceBody) },
      },
    },
    async (req) => devices.get(req.params.id),
  )

  app.delete(
    '/devices/:id',
    {
      schema: { ...admin, tags: ['devices'], summary: 'Delete a device and its telemetry', params: IdParam },
    },
    async (req, reply) => {
      await devices.delete(req.params.id)
      return reply.code(204).send()
    },
  )

  app.post(
    '/devices/:id/token',
    {
      schema: {
        ...admin,
        tags: ['devices'],
        summary: 'Rotate the device token (the old one stops working)',
        params: IdParam,
        response: { 200: Type.Object({ token: Type.String() }) },
      },
    },
    async (req) => ({ token: await devices.rotateToken(req.params.id) }),
  )

  app.get(
    '/devices/:id/telemetry',
    {
      schema: {
        ...admin,
        tags: ['telemetry'],
        summary: 'Raw or aggregated telemetry per key',
        description:
          'Without agg: the points, newest first by default. With agg and interval: one point per bucket.',
        params: IdParam,
        querystring: TelemetryQuery,
        response: { 200: TelemetryResult },
      },
    },
    async (req) => {
      const q = req.query
      const id = req.params.id
      const from = parseTime('from', q.from)
      const to = parseTime('to', q.to)
      const keys = [
        ...new Set(
          q.keys
            .split(',')
            .map((k) => k.trim())
            .filter(Boolean),
        ),
      ]
      if (keys.length === 0)
        throw new IotError('IOT_ERR_BAD_REQUEST', 'keys must name at least one value key')
      if (!(await store.getDevice(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      const out: Record<string, Array<{ ts: number; value: unknown }>> = {}
      if (q.agg !== undefined || q.interval !== undefined) {
        if (q.agg === undefined || q.interval === undefined) {
          throw new IotError('IOT_ERR_BAD_REQUEST', 'agg and interval go together, e.g. agg=avg&interval=1m')
        }
        const interval = parseInterval(q.interval)
        if (from !== undefined && to !== undefined && (to - from) / interval > MAX_BUCKETS) {
          throw new IotError(
            'IOT_ERR_BAD_REQUEST',
            `more than ${MAX_BUCKETS} buckets: widen the interval or narrow from/to`,
          )
        }
        const results = await Promise.all(
          keys.map((k) => store.aggregate(id, k, q.agg as Aggregate, interval, from, to, q.limit, q.order)),
        )
        for (let i = 0; i < keys.length; i++) out[keys[i]] = results[i]
      } else {
        const results = await Promise.all(keys.map((k) => store.telemetry(id, k, from, to, q.limit, q.order)))
        for (let i = 0; i < keys.length; i++) out[keys[i]] = results[i]
      }
      return out
    },
  )

  app.get(
    '/devices/:id/latest',
    {
      schema: {
        ...admin,
        tags: ['telemetry'],
        summary: 'Latest value of every key',
        params: IdParam,
        response: { 200: Latest },
      },
    },
    async (req) => {
      const l = await store.latest(req.params.id)
      if (!l) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', req.params.id)
      let ts: number | null = null
      for (const k in l.values) if (ts === null || l.values[k].ts > ts) ts = l.values[k].ts
      return { ts, values: l.values }
    },
  )

  app.get(
    '/services',
    {
      schema: {
        ...admin,
        tags: ['operations'],
        summary: 'iotcore processes and their heartbeats',
        response: {
          200: Type.Object({
            services: Type.Array(
              Type.Object({
                id: Type.String(),
                roles: Type.Array(Type.String()),
                host: Type.String(),
                pid: Type.Integer(),
                startedAt: Type.String({ format: 'date-time' }),
                beatAt: Type.String({ format: 'date-time' }),
                stoppedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
              }),
            ),
          }),
        },
      },
    },
    async () => {
      const r = await store.pool.query(
        'SELECT id, roles, host, pid, started_at, beat_at, stopped_at FROM services ORDER BY started_at DESC LIMIT 1000',
      )
      return {
        services: r.rows.map((x) => ({
          id: x.id,
          roles: x.roles,
          host: x.host,
          pid: x.pid,
          startedAt: x.started_at.toISOString(),
          beatAt: x.beat_at.toISOString(),
          stoppedAt: x.stopped_at ? x.stopped_at.toISOString() : null,
        })),
      }
    },
  )

  app.get(
    '/quarantine',
    {
      schema: {
        ...admin,
        tags: ['quarantine'],
        summary: 'Rejected messages with their reason, newest first',
        querystring: QuarantineQuery,
        response: { 200: Type.Object({ items: Type.Array(Type.Ref(QuarantineItem)) }) },
      },
    },
    async (req) => {
      const q = req.query
      const rows = await store.listQuarantine({
        deviceId: q.deviceId,
        reason: q.reason,
        from: parseTime('from', q.from),
        to: parseTime('to', q.to),
        limit: q.limit,
        offset: q.offset,
      })
      return { items: rows.map(quarantineView) }
    },
  )

  app.post(
    '/quarantine/:id/replay',
    {
      schema: {
        ...admin,
        tags: ['quarantine'],
        summary: 'Send a quarantined message through ingest again, optionally corrected',
        description:
          'Without body: the stored payload as it was. With body: the corrected reading(s). Answers 202 once durably queued; 400 if still invalid (nothing is queued).',
        params: IdParam,
        body: Type.Optional(ReplayBody),
        response: { 202: Accepted },
      },
    },
    async (req, reply) => {
      const item = await store.getQuarantine(req.params.id)
      if (!item) throw new IotError('IOT_ERR_QUARANTINE_NOT_FOUND', req.params.id)
      if (!item.deviceId) throw new IotError('IOT_ERR_BAD_REQUEST', 'this message came from no known device')
      const corrected = req.body?.body
      const payload = corrected === undefined ? item.payload : correctedPayload(corrected)
      if (!(await store.markReplayed(item.id))) throw new IotError('IOT_ERR_QUARANTINE_REPLAYED', item.id)
      try {
        const r = await acceptPayload(
          queue,
          metrics,
          item.deviceId,
          'replay',
          payload,
          Date.parse(item.receivedAt),
          false,
        )
        return reply.code(202).send({ accepted: r.accepted, quarantined: r.quarantined })
      } catch (err) {
        await store.unmarkReplayed(item.id)
        throw err
      }
    },
  )
}

function quarantineView(r: import('../store/index.js').QuarantineRow) {
  const text = r.payload.toString('utf8')
  const utf8 = Buffer.from(text, 'utf8').equals(r.payload)
  return {
    ...r,
    payload: utf8 ? text : r.payload.toString('base64'),
    payloadEncoding: utf8 ? ('utf8' as const) : ('base64' as const),
  }
}
