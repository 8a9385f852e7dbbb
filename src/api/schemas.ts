import { type Static, Type } from '@sinclair/typebox'
import { QUERY_TIME_FORMS } from '../readings/time.js'
import { COMMAND_STATUSES } from '../store/index.js'

/** REST schemas: they validate requests, type the handlers and produce the OpenAPI document at /docs. */

export const ErrorBody = Type.Object(
  {
    statusCode: Type.Integer(),
    code: Type.String({ description: 'A stable IOT_ERR_* code' }),
    error: Type.String(),
    message: Type.String({ description: 'What was wrong and what to do' }),
  },
  { $id: 'Error' },
)

const Attributes = Type.Record(Type.String(), Type.Unknown())

export const DeviceBody = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    imei: Type.Union([Type.String(), Type.Null()]),
    attributes: Attributes,
    createdAt: Type.String({ format: 'date-time' }),
    lastSeenAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    retiredAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'when DELETE with data=keep retired it: its telemetry stays readable, it cannot connect',
    }),
    online: Type.Boolean(),
  },
  { $id: 'Device' },
)

export const CreateDevice = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    imei: Type.Optional(
      Type.String({ pattern: '^[0-9A-Za-z_-]{1,32}$', description: 'unique id for TCP trackers' }),
    ),
    attributes: Type.Optional(Attributes),
  },
  { additionalProperties: false },
)
export type CreateDevice = Static<typeof CreateDevice>

export const UpdateDevice = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    attributes: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description:
          'replaces all of its attributes (device groups of rules, "resend": true); takes effect with its next batch',
      }),
    ),
  },
  { additionalProperties: false },
)
export type UpdateDevice = Static<typeof UpdateDevice>

export const CreatedDevice = Type.Intersect([
  Type.Ref(DeviceBody),
  Type.Object({ token: Type.String({ description: 'shown once: store it on the device' }) }),
])

export const IdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })

export const Cursor = Type.Optional(
  Type.String({
    maxLength: 16384,
    description:
      'continue after the page this came from: the `next` of a page (or its Iotcore-Next-Cursor header), ' +
      'sent with the same other parameters; absent: the first page',
  }),
)

/** The `order` parameter of a paged query: by the list's key, `dflt` when absent; `description` names the key. */
export const Order = (dflt: 'asc' | 'desc', description: string) =>
  Type.Union([Type.Literal('asc'), Type.Literal('desc')], { default: dflt, description })

/** What a paged answer says about the next page (the body field `next` beside the items, where there is one). */
export const NEXT_HEADERS = {
  'iotcore-next-cursor': {
    type: 'string',
    description: 'the cursor of the next page; absent on the last page',
  },
  link: {
    type: 'string',
    description: 'RFC 8288 `<this URL with cursor=...>; rel="next"`; absent on the last page',
  },
}

export const Next = Type.Union([Type.String(), Type.Null()], {
  description: 'cursor of the next page (send it as `cursor`); null on the last page',
})

const OFFSET_REFUSED =
  'Pages are keyset cursors, not offsets: follow `next`. `offset` is refused (400), never ignored, so that an ' +
  'old client cannot loop on the first page.'

export const DeviceListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  order: Order('asc', 'by creation time, ties by id: asc is oldest first'),
  retired: Type.Union([Type.Literal('exclude'), Type.Literal('include'), Type.Literal('only')], {
    default: 'exclude',
    description:
      'devices retired by DELETE with data=keep: left out (the default), listed too, or listed alone',
  }),
  cursor: Cursor,
})
export type DeviceListQuery = Static<typeof DeviceListQuery>

export const DeviceList = Type.Object(
  {
    devices: Type.Array(Type.Ref(DeviceBody)),
    limit: Type.Integer(),
    next: Next,
  },
  { headers: NEXT_HEADERS, description: OFFSET_REFUSED },
)

export const Point = Type.Object({
  ts: Type.Integer({ description: 'ms since the epoch' }),
  value: Type.Unknown(),
  flags: Type.Optional(
    Type.Array(Type.String(), {
      description:
        'the quality checks the reading failed (gps_zero, gps_jump, ts_future, ts_old, type_changed, rule:<name>); absent when it passed them all',
    }),
  ),
})

const TimeBound = (which: string) =>
  Type.Optional(Type.String({ description: `${which}: ${QUERY_TIME_FORMS}; from after to is a 400` }))

export const TelemetryQuery = Type.Object({
  keys: Type.String({ minLength: 1, description: 'comma-separated value keys, e.g. lat,lon,speed' }),
  from: TimeBound('inclusive'),
  to: TimeBound('exclusive'),
  limit: Type.Integer({
    minimum: 1,
    maximum: 100000,
    default: 1000,
    description: 'points (or buckets) per key in one page',
  }),
  order: Order(
    'desc',
    'by ts, ties by msgId (both reversed by desc, so desc is the mirror of asc): desc is newest first',
  ),
  cursor: Cursor,
  flagged: Type.Optional(
    Type.Boolean({ description: 'true: only the readings the quality checks flagged (they carry `flags`)' }),
  ),
  agg: Type.Optional(
    Type.Union([
      Type.Literal('avg'),
      Type.Literal('min'),
      Type.Literal('max'),
      Type.Literal('sum'),
      Type.Literal('count'),
    ]),
  ),
  interval: Type.Optional(
    Type.String({ pattern: '^[0-9]+(ms|s|m|h|d|w)$', description: 'bucket size with agg, e.g. 1m' }),
  ),
})
export type TelemetryQuery = Static<typeof TelemetryQuery>

export const TelemetryResult = Type.Record(Type.String(), Type.Array(Point), {
  headers: NEXT_HEADERS,
  description:
    'Every key asked for, with its points. Raw points come a page at a time (`limit` per key): while any key ' +
    'has more, the answer carries the next cursor in its headers (the body stays `{key: [points]}`, where a ' +
    'field of its own could clash with a key), and a key that ran out comes back empty on later pages.',
})

export const Latest = Type.Object({
  ts: Type.Union([Type.Integer(), Type.Null()]),
  values: Type.Record(Type.String(), Point),
})

export const Accepted = Type.Object({
  accepted: Type.Integer({ description: 'readings durably queued' }),
  quarantined: Type.Optional(Type.Integer({ description: 'readings refused and kept in the quarantine' })),
  errors: Type.Optional(
    Type.Array(
      Type.Object({ index: Type.Optional(Type.Integer()), reason: Type.String(), detail: Type.String() }),
    ),
  ),
})

export const QuarantineItem = Type.Object(
  {
    id: Type.String(),
    deviceId: Type.Union([Type.String(), Type.Null()]),
    transport: Type.String(),
    topic: Type.Union([Type.String(), Type.Null()]),
    reason: Type.String(),
    detail: Type.String(),
    payload: Type.String({ description: 'the bytes received, as text, or base64 when not UTF-8' }),
    payloadEncoding: Type.Union([Type.Literal('utf8'), Type.Literal('base64')]),
    acked: Type.Boolean({ description: 'false: the device was told it was refused' }),
    receivedAt: Type.String({ format: 'date-time' }),
    replayedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { $id: 'QuarantineItem' },
)

export const QuarantineQuery = Type.Object({
  deviceId: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String()),
  from: TimeBound('received at or after'),
  to: TimeBound('received before'),
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  order: Order('desc', 'by time received, ties by id: desc is newest first'),
  cursor: Cursor,
})
export type QuarantineQuery = Static<typeof QuarantineQuery>

export const QuarantineList = Type.Object(
  { items: Type.Array(Type.Ref(QuarantineItem)), next: Next },
  { headers: NEXT_HEADERS, description: OFFSET_REFUSED },
)

export const ReplayBody = Type.Object(
  { body: Type.Optional(Type.Unknown({ description: 'a corrected reading or array of readings' })) },
  { additionalProperties: false },
)

const When = (what: string) =>
  Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: what })

export const CommandBody = Type.Object(
  {
    id: Type.String({ description: 'the command id: in the payload the device gets, and in its answer' }),
    deviceId: Type.String(),
    name: Type.String(),
    params: Attributes,
    status: Type.Union(
      COMMAND_STATUSES.map((s) => Type.Literal(s)),
      {
        description:
          'queued: waiting for the device to connect (and, over MQTT, to subscribe to its commands topic); ' +
          'sent: on its connection; delivered: the device took it (MQTT PUBACK); replied: it answered ok; ' +
          'failed: it answered error, refused it, or every send died with its connection; expired: its ttl ' +
          'ran out before it was sent',
      },
    ),
    attempts: Type.Integer({ description: 'sends so far, one per connection it went out on' }),
    error: Type.Union([Type.String(), Type.Null()], { description: 'why it is not further along' }),
    result: Type.Unknown({ description: "the device's answer (`result` of its ack), or null" }),
    createdAt: Type.String({ format: 'date-time' }),
    expiresAt: Type.String({ format: 'date-time', description: 'not sent by then: expired' }),
    sentAt: When('the latest send'),
    deliveredAt: When('when the device took it'),
    repliedAt: When('when the device answered'),
  },
  { $id: 'Command' },
)

export const CreateCommand = Type.Object(
  {
    name: Type.String({
      minLength: 1,
      maxLength: 512,
      description:
        'what to do; for a Teltonika tracker the text command itself, e.g. `getinfo`, `setdigout 1`',
    }),
    params: Type.Optional(Attributes),
    ttl: Type.Integer({
      minimum: 1,
      maximum: 30 * 86_400,
      default: 86_400,
      description: 'seconds the command may wait for the device; not sent by then, it expires',
    }),
  },
  { additionalProperties: false },
)
export type CreateCommand = Static<typeof CreateCommand>

export const CommandParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 64 }),
  cid: Type.String({ minLength: 1, maxLength: 64 }),
})

export const CommandListQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  order: Order('desc', 'by creation time, ties by id: desc is newest first'),
  status: Type.Optional(Type.Union(COMMAND_STATUSES.map((s) => Type.Literal(s)))),
  cursor: Cursor,
})
export type CommandListQuery = Static<typeof CommandListQuery>

export const CommandList = Type.Object(
  { items: Type.Array(Type.Ref(CommandBody)), next: Next },
  { headers: NEXT_HEADERS, description: OFFSET_REFUSED },
)
