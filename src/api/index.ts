import { createHash, timingSafeEqual } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { type TSchema, Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest, FastifySchema } from 'fastify'
import { DELETE_DATA, type Devices } from '../devices/index.js'
import { type ErrorCode, IotError } from '../errors.js'
import { acceptPayload, correctedPayload } from '../gateway/accept.js'
import type { Metrics } from '../metrics/index.js'
import type { Queue } from '../queue/types.js'
import { parseTimeQuery } from '../readings/time.js'
import {
  type Aggregate,
  COMMAND_ID,
  isKeyset,
  jsonProblem,
  type Keyset,
  type Page,
  type Point,
  QUARANTINE_ID,
  type QuarantineRow,
  type Store,
  unstorable,
} from '../store/index.js'
import { type ConsoleDeps, consoleApi } from './console.js'
import type { AlertStream } from './alert-stream.js'
import { alertRoutes } from './alerts.js'
import { decodeCursor, encodeCursor, keysetPage, linkNext, type QueryIdentity } from './cursor.js'
import { qualityRoutes } from './rules.js'
import {
  Accepted,
  CommandBody,
  CommandList,
  CommandListQuery,
  CommandParams,
  CreateCommand,
  CreateDevice,
  UpdateDevice,
  CreatedDevice,
  DeviceBody,
  DeviceList,
  DeviceListQuery,
  IdParam,
  Latest,
  QuarantineList,
  QuarantineQuery,
  ReplayBody,
  TelemetryQuery,
  TelemetryResult,
} from './schemas.js'

/** Aggregation over more buckets than this is a mistake in the interval, and a slow query. */
const MAX_BUCKETS = 100_000
/** GET /services lists at most this many, newest first. */
const MAX_SERVICES = 1000
const INTERVAL_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const
/**
 * Attributes (a device's, a rule's group) are labels (fleet, model, install date), and a command's params are
 * arguments, not documents; past this, nesting is more likely a mistake or an attack, and PostgreSQL's jsonb
 * parser would fail deep enough (a 500).
 */
const MAX_ARGUMENT_DEPTH = 32

export interface ApiDeps {
  store: Store
  devices: Devices
  queue: Queue
  metrics: Metrics
  adminToken: string
  /** The web console's routes (settings, fleet, series, live stream); absent: not served. */
  console?: Omit<ConsoleDeps, 'store'>
  /** The alert events' SSE streams of this process. */
  alertStream: AlertStream
}

const sha = (s: string) => createHash('sha256').update(s).digest()

/** Parses `from`/`to` by the one time contract (readings/time.ts); absent or empty: unbounded. */
export function parseTime(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined || raw === '') return undefined
  const t = parseTimeQuery(name, raw)
  if (typeof t !== 'number') throw new IotError('IOT_ERR_BAD_REQUEST', t.message)
  return t
}

/** `from` and `to` of a query; a range that ends before it starts is a mistake worth one clear message. */
export function parseRange(q: { from?: string; to?: string }): { from?: number; to?: number } {
  const from = parseTime('from', q.from)
  const to = parseTime('to', q.to)
  if (from !== undefined && to !== undefined && from > to) {
    const iso = (ms: number) => new Date(ms).toISOString()
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      `from (${iso(from)}) is after to (${iso(to)}): the range [from, to) holds nothing`,
    )
  }
  return { from, to }
}

/**
 * Offsets were replaced by cursors. Fastify keeps a query parameter the schema does not name, so an old client's
 * `offset` would be ignored, and it would fetch the first page forever: refuse it instead.
 */
export async function refuseOffset(req: FastifyRequest): Promise<void> {
  if ((req.query as Record<string, unknown>).offset !== undefined)
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      'offset is not supported: pages are keyset cursors, follow next',
    )
}

/** A body's text field where PostgreSQL would refuse it (a 500) or alter it: IOT_ERR_UNSTORABLE_TEXT. */
export function checkText(field: string, value: string): void {
  const bad = unstorable(value)
  if (bad) throw new IotError('IOT_ERR_UNSTORABLE_TEXT', `body field '${field}' holds ${bad}`)
}

/**
 * A body's JSON object (attributes, a command's params), if given, where PostgreSQL would refuse it (a 500) or
 * alter it: its keys and values at any depth, and a nesting past MAX_ARGUMENT_DEPTH.
 */
export function checkArguments(field: string, value: object | undefined): void {
  const problem = value && jsonProblem(value, field, MAX_ARGUMENT_DEPTH)
  if (problem?.kind === 'text') throw new IotError('IOT_ERR_UNSTORABLE_TEXT', `body field ${problem.message}`)
  if (problem?.kind === 'depth') throw new IotError('IOT_ERR_BAD_REQUEST', problem.message)
}

/** `x`, or a 404 with `code` (one of the registry's not-found codes) naming `id` when there is none. */
export function found<T>(x: T | undefined, code: Extract<ErrorCode, `${string}_NOT_FOUND`>, id: string): T {
  if (x === undefined) throw new IotError(code, id)
  return x
}

/** Strings of a request's path or query that PostgreSQL could not compare: a 400 naming the parameter. */
function checkStorable(part: string, values: unknown): void {
  if (values === null || typeof values !== 'object') return
  for (const [name, v] of Object.entries(values)) {
    for (const s of Array.isArray(v) ? v : [v]) {
      const bad = typeof s === 'string' ? unstorable(s) : undefined
      if (bad) throw new IotError('IOT_ERR_UNSTORABLE_TEXT', `${part} '${name}' holds ${bad}`)
    }
  }
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

/** The OpenAPI tags of the admin API, one per resource. */
type Tag =
  | 'devices'
  | 'telemetry'
  | 'operations'
  | 'quarantine'
  | 'commands'
  | 'alerts'
  | 'webhooks'
  | 'rules'

/**
 * A route's options: its schema (validation, handler types, OpenAPI), documented under `tag` and as needing
 * the admin token, as every route of this API does.
 */
export function adminRoute<S extends FastifySchema>(tag: Tag, summary: string, schema: S) {
  return { schema: { security: [{ admin: [] }], tags: [tag], summary, ...schema } }
}

/**
 * As adminRoute, for a list paged by keyset cursors: `querystring` its parameters, `list` its answer, `params`
 * its path's, if any. Its summary says it comes a page at a time, and a request that asks for an offset is
 * refused.
 */
export function listRoute<Q extends TSchema, L extends TSchema, P extends TSchema = TSchema>(
  tag: Tag,
  summary: string,
  querystring: Q,
  list: L,
  params?: P,
) {
  return {
    ...adminRoute(tag, `${summary}, a page at a time`, {
      querystring,
      response: { 200: list },
      ...(params ? { params } : {}),
    }),
    preHandler: refuseOffset,
  }
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

  // Before the schema and any query: an id or filter holding U+0000 would be a database error (a 500).
  app.addHook('preValidation', async (req) => {
    checkStorable('path parameter', req.params)
    checkStorable('query parameter', req.query)
  })

  await app.register(alertRoutes, { store, stream: deps.alertStream })
  await app.register(qualityRoutes, { store })

  app.post(
    '/devices',
    adminRoute('devices', 'Register a device', { body: CreateDevice, response: { 201: CreatedDevice } }),
    async (req, reply) => {
      // The imei needs no check: its pattern admits ASCII letters, digits, _ and -.
      checkText('name', req.body.name)
      checkArguments('attributes', req.body.attributes)
      return reply.code(201).send(await devices.create(req.body))
    },
  )

  app.get(
    '/devices',
    listRoute('devices', 'List devices with last seen and online status', DeviceListQuery, DeviceList),
    async (req, reply) => {
      const { limit, order, cursor, retired } = req.query
      const page = await keysetPage(req, reply, { query: ['devices', order, retired], cursor }, (after) =>
        devices.list(limit, order, after, retired),
      )
      return { devices: page.items, limit, next: page.next }
    },
  )

  app.get(
    '/devices/:id',
    adminRoute('devices', 'Read a device', { params: IdParam, response: { 200: Type.Ref(DeviceBody) } }),
    async (req) => devices.get(req.params.id),
  )

  app.patch(
    '/devices/:id',
    adminRoute('devices', 'Rename a device or replace its attributes', {
      params: IdParam,
      body: UpdateDevice,
      response: { 200: Type.Ref(DeviceBody) },
    }),
    async (req) => {
      // Fields the schema does not know are dropped before this (Fastify's removeAdditional), as for POST.
      if (req.body.name === undefined && req.body.attributes === undefined)
        throw new IotError('IOT_ERR_BAD_REQUEST', 'nothing to change: send name or attributes')
      if (req.body.name !== undefined) checkText('name', req.body.name)
      checkArguments('attributes', req.body.attributes)
      return devices.update(req.params.id, req.body)
    },
  )

  app.delete(
    '/devices/:id',
    adminRoute(
      'devices',
      'Retire a device (data=keep, the default) or remove it with its telemetry (data=delete)',
      {
        description:
          'Either way the device can no longer connect: its token stops working at once, its live MQTT ' +
          'connections are cut on every gateway process (MQTT 5: DISCONNECT 0x87), and readings of it still ' +
          'queued go to the quarantine as device_deleted instead of into telemetry. data=keep retires it: it ' +
          'leaves the default device list (retired=include shows it), and its telemetry stays readable until a ' +
          'second DELETE with data=delete removes the device and its telemetry together. Retiring a retired ' +
          'device changes nothing.',
        params: IdParam,
        querystring: Type.Object({
          data: Type.Union(
            DELETE_DATA.map((d) => Type.Literal(d)),
            { default: 'keep', description: 'keep: retire, telemetry stays; delete: remove it all' },
          ),
        }),
      },
    ),
    async (req, reply) => {
      await devices.delete(req.params.id, req.query.data)
      return reply.code(204).send()
    },
  )

  app.post(
    '/devices/:id/token',
    adminRoute('devices', 'Rotate the device token (the old one stops working)', {
      params: IdParam,
      response: { 200: Type.Object({ token: Type.String() }) },
    }),
    async (req) => ({ token: await devices.rotateToken(req.params.id) }),
  )

  app.get(
    '/devices/:id/telemetry',
    adminRoute('telemetry', 'Raw or aggregated telemetry per key', {
      description:
        'Without agg: the points, newest first by default, a page at a time: while there are more, the ' +
        'Iotcore-Next-Cursor and Link headers give the next page (send `cursor`). With agg and interval: one ' +
        'point per bucket, not paged. avg, min, max and sum use the numbers under the key (buckets without ' +
        'one are left out); on a key with no number in the range they are a 400, while count counts ' +
        'readings of any type.',
      params: IdParam,
      querystring: TelemetryQuery,
      response: { 200: TelemetryResult },
    }),
    async (req, reply) => {
      const q = req.query
      const id = req.params.id
      const { from, to } = parseRange(q)
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
      if (!(await store.devices.get(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      // Keys are the client's words: `__proto__` must be a key like any other, not the object's prototype.
      const out: Record<string, Point[]> = Object.create(null)
      const range = { deviceId: id, from, to, limit: q.limit, order: q.order, flagged: q.flagged }
      if (q.agg !== undefined || q.interval !== undefined) {
        if (q.agg === undefined || q.interval === undefined) {
          throw new IotError('IOT_ERR_BAD_REQUEST', 'agg and interval go together, e.g. agg=avg&interval=1m')
        }
        if (q.cursor !== undefined)
          throw new IotError(
            'IOT_ERR_BAD_REQUEST',
            'cursor pages raw points; aggregates are not paged: narrow from/to or widen the interval',
          )
        const interval = parseInterval(q.interval)
        if (from !== undefined && to !== undefined && (to - from) / interval > MAX_BUCKETS) {
          throw new IotError(
            'IOT_ERR_BAD_REQUEST',
            `more than ${MAX_BUCKETS} buckets: widen the interval or narrow from/to`,
          )
        }
        const agg = q.agg
        const results = await Promise.all(
          keys.map((key) => store.queries.aggregate({ ...range, key, agg, intervalMs: interval })),
        )
        for (let i = 0; i < keys.length; i++) {
          if (results[i].length === 0 && agg !== 'count') await explainNoNumbers(agg, id, keys[i], from, to)
          out[keys[i]] = results[i]
        }
        return out
      }
      // Raw points, a page per key: the cursor holds where each key's page ended, null for a key that ran out.
      const query: QueryIdentity = [
        'telemetry',
        id,
        keys,
        from ?? null,
        to ?? null,
        q.order,
        q.flagged ? 'flagged' : null,
      ]
      const starts =
        q.cursor === undefined
          ? keys.map(() => undefined)
          : decodeCursor(q.cursor, query, (p): p is Array<Keyset | null> => isKeysets(p, keys.length))
      const pages = await Promise.all(
        keys.map(
          (key, i): Promise<Page<Point>> =>
            starts[i] === null
              ? Promise.resolve({ items: [], next: null })
              : store.queries.telemetry({ ...range, key, after: starts[i] }),
        ),
      )
      for (let i = 0; i < keys.length; i++) out[keys[i]] = pages[i].items
      const nexts = pages.map((x) => x.next)
      linkNext(req, reply, nexts.some((x) => x !== null) ? encodeCursor(query, nexts) : null)
      return out
    },
  )

  /** An aggregate of numbers found none: if the key holds something else there, say so rather than `[]`. */
  async function explainNoNumbers(
    agg: Aggregate,
    deviceId: string,
    key: string,
    from: number | undefined,
    to: number | undefined,
  ): Promise<void> {
    const type = await store.queries.someValueType({ deviceId, key, from, to })
    if (type === undefined) return
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      `agg=${agg} needs numbers, and key '${key}' holds ${type}s in this range, no number; ` +
        'agg=count counts readings of any type',
    )
  }

  app.get(
    '/devices/:id/latest',
    adminRoute('telemetry', 'Latest value of every key', { params: IdParam, response: { 200: Latest } }),
    async (req) => {
      const l = found(await store.queries.latest(req.params.id), 'IOT_ERR_DEVICE_NOT_FOUND', req.params.id)
      let ts: number | null = null
      for (const k in l.values) if (ts === null || l.values[k].ts > ts) ts = l.values[k].ts
      return { ts, values: l.values }
    },
  )

  app.get(
    '/services',
    adminRoute('operations', 'iotcore processes and their heartbeats', {
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
    }),
    async () => {
      return { services: await store.services.list(MAX_SERVICES) }
    },
  )

  app.get(
    '/quarantine',
    listRoute(
      'quarantine',
      'Rejected messages with their reason, newest first',
      QuarantineQuery,
      QuarantineList,
    ),
    async (req, reply) => {
      const q = req.query
      const { from, to } = parseRange(q)
      const query: QueryIdentity = [
        'quarantine',
        q.deviceId ?? null,
        q.reason ?? null,
        from ?? null,
        to ?? null,
        q.order,
      ]
      const page = await keysetPage(
        req,
        reply,
        { query, cursor: q.cursor, idPattern: QUARANTINE_ID },
        (after) =>
          store.quarantine.list({
            deviceId: q.deviceId,
            reason: q.reason,
            from,
            to,
            limit: q.limit,
            order: q.order,
            after,
          }),
      )
      return { items: page.items.map(quarantineView), next: page.next }
    },
  )

  app.post(
    '/quarantine/:id/replay',
    adminRoute('quarantine', 'Send a quarantined message through ingest again, optionally corrected', {
      description:
        'Without body: the stored payload as it was. With body: the corrected reading(s). Answers 202 once durably queued; 400 if still invalid (nothing is queued).',
      params: IdParam,
      body: Type.Optional(ReplayBody),
      response: { 202: Accepted },
    }),
    async (req, reply) => {
      const item = await store.quarantine.get(req.params.id)
      if (!item) throw new IotError('IOT_ERR_QUARANTINE_NOT_FOUND', req.params.id)
      if (!item.deviceId) throw new IotError('IOT_ERR_BAD_REQUEST', 'this message came from no known device')
      const corrected = req.body?.body
      const payload = corrected === undefined ? item.payload : correctedPayload(corrected)
      if (!(await store.quarantine.markReplayed(item.id)))
        throw new IotError('IOT_ERR_QUARANTINE_REPLAYED', item.id)
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
        await store.quarantine.unmarkReplayed(item.id)
        throw err
      }
    },
  )

  if (deps.console) await app.register(consoleApi, { store, ...deps.console })
  commandRoutes(app, store)
}

/** Downlink commands: queued here, sent by the gateway process holding the device's connection. */
function commandRoutes(app: FastifyInstance, store: Store): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>()
  api.post(
    '/devices/:id/commands',
    adminRoute('commands', 'Send the device a command', {
      description:
        'Queued in PostgreSQL and sent at once if the device is connected (to any gateway process), else when ' +
        'it connects, until its ttl runs out. MQTT devices get it on devices/<id>/commands as ' +
        '{id, name, params} at QoS 1 (with a Response Topic and Correlation Data in MQTT 5) once subscribed to ' +
        'that topic, and answer on devices/<id>/commands/ack with {id, status: "ok"|"error", result?}; ' +
        'Teltonika trackers get `name` as a Codec 12 command. Follow its status with GET .../commands/:cid. ' +
        'A retired device cannot take commands (409).',
      params: IdParam,
      body: CreateCommand,
      response: { 201: Type.Ref(CommandBody) },
    }),
    async (req, reply) => {
      checkText('name', req.body.name)
      checkArguments('params', req.body.params)
      const { name, params, ttl } = req.body
      const cmd = await store.commands.create({
        deviceId: req.params.id,
        name,
        params: params ?? {},
        ttlSeconds: ttl,
      })
      return reply.code(201).send(cmd)
    },
  )

  api.get(
    '/devices/:id/commands',
    {
      ...adminRoute('commands', "The device's commands with their status, newest first, a page at a time", {
        params: IdParam,
        querystring: CommandListQuery,
        response: { 200: CommandList },
      }),
      preHandler: refuseOffset,
    },
    async (req, reply) => {
      const { id } = req.params
      const { limit, order, status, cursor } = req.query
      if (!(await store.devices.get(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      const query: QueryIdentity = ['commands', id, status ?? null, order]
      const page = await keysetPage(req, reply, { query, cursor, idPattern: COMMAND_ID }, (after) =>
        store.commands.list(id, limit, order, after, status),
      )
      return { items: page.items, next: page.next }
    },
  )

  api.get(
    '/devices/:id/commands/:cid',
    adminRoute('commands', 'Read a command and its status', {
      params: CommandParams,
      response: { 200: Type.Ref(CommandBody) },
    }),
    async (req) => {
      const { id, cid } = req.params
      const cmd = await store.commands.get(id, cid)
      if (cmd) return cmd
      if (!(await store.devices.get(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      throw new IotError('IOT_ERR_COMMAND_NOT_FOUND', [cid, id])
    },
  )
}

/** A telemetry cursor's positions: one per key, null for a key that ran out. */
function isKeysets(p: unknown, keys: number): boolean {
  return Array.isArray(p) && p.length === keys && p.every((x) => x === null || isKeyset(x))
}

function quarantineView(r: QuarantineRow) {
  const text = r.payload.toString('utf8')
  const utf8 = Buffer.from(text, 'utf8').equals(r.payload)
  return {
    ...r,
    payload: utf8 ? text : r.payload.toString('base64'),
    payloadEncoding: utf8 ? ('utf8' as const) : ('base64' as const),
  }
}
