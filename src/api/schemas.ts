import { type Static, Type } from '@sinclair/typebox'

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

export const CreatedDevice = Type.Intersect([
  Type.Ref(DeviceBody),
  Type.Object({ token: Type.String({ description: 'shown once: store it on the device' }) }),
])

export const IdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })

export const Paging = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  offset: Type.Integer({ minimum: 0, default: 0 }),
})

export const Point = Type.Object({
  ts: Type.Integer({ description: 'ms since the epoch' }),
  value: Type.Unknown(),
})

export const TelemetryQuery = Type.Object({
  keys: Type.String({ minLength: 1, description: 'comma-separated value keys, e.g. lat,lon,speed' }),
  from: Type.Optional(Type.String({ description: 'ISO 8601 or ms since the epoch, inclusive' })),
  to: Type.Optional(Type.String({ description: 'ISO 8601 or ms since the epoch, exclusive' })),
  limit: Type.Integer({ minimum: 1, maximum: 100000, default: 1000, description: 'points per key' }),
  order: Type.Union([Type.Literal('asc'), Type.Literal('desc')], { default: 'desc' }),
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

export const TelemetryResult = Type.Record(Type.String(), Type.Array(Point))

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
  from: Type.Optional(Type.String()),
  to: Type.Optional(Type.String()),
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  offset: Type.Integer({ minimum: 0, default: 0 }),
})
export type QuarantineQuery = Static<typeof QuarantineQuery>

export const ReplayBody = Type.Object(
  { body: Type.Optional(Type.Unknown({ description: 'a corrected reading or array of readings' })) },
  { additionalProperties: false },
)
