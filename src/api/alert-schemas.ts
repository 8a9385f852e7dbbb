import { type Static, type TLiteral, type TSchema, type TUnion, Type } from '@sinclair/typebox'
import { ALERT_EVENTS, ALERT_STATUSES, DELIVERY_STATUSES, EVENT_TYPES, SEVERITIES } from '../store/index.js'
import { Cursor, NEXT_HEADERS, Next, Order } from './schemas.js'

/** Schemas of the alerts and webhooks routes (api/alerts.ts). */

const Time = Type.String({ format: 'date-time' })
const TimeOrNull = (description?: string) =>
  Type.Union([Time, Type.Null()], description ? { description } : {})
/** One of `values`: a union of their literals, typed as the tuple it is (an array's would type as `never`). */
const OneOf = <const T extends readonly string[]>(values: T, opts: object = {}) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    opts,
  ) as unknown as TUnion<{ -readonly [K in keyof T]: TLiteral<T[K]> }>

const paged = <T extends TSchema>(items: T) =>
  Type.Object({ items: Type.Array(items), next: Next }, { headers: NEXT_HEADERS })

export const Alert = Type.Object({
  id: Type.String(),
  type: Type.String({ description: 'what is wrong: offline, postgres_down, counter_drift, ...' }),
  severity: OneOf(SEVERITIES),
  deviceId: Type.Union([Type.String(), Type.Null()], {
    description: "the device it is about; null for a service's",
  }),
  service: Type.Union([Type.String(), Type.Null()], {
    description: 'the service it is about (host:roles, or a silent heartbeat id); null for a device alert',
  }),
  status: OneOf(ALERT_STATUSES, {
    description:
      'active while the condition holds; cleared once over, for good (a new occurrence opens a new alert)',
  }),
  acknowledged: Type.Boolean(),
  acknowledgedAt: TimeOrNull(),
  firstSeen: Time,
  lastSeen: Time,
  clearedAt: TimeOrNull(),
  count: Type.Integer({ description: 'occurrences while active' }),
  details: Type.Record(Type.String(), Type.Unknown(), {
    description: 'the latest occurrence, with its numbers',
  }),
})

export const AlertQuery = Type.Object({
  status: Type.Optional(OneOf(ALERT_STATUSES)),
  acknowledged: Type.Optional(Type.Boolean()),
  severity: Type.Optional(
    Type.String({
      pattern: `^(${SEVERITIES.join('|')})(,(${SEVERITIES.join('|')}))*$`,
      description: 'one or more, comma-separated: critical,major',
    }),
  ),
  deviceId: Type.Optional(Type.String({ maxLength: 64 })),
  service: Type.Optional(Type.String({ maxLength: 256 })),
  type: Type.Optional(Type.String({ maxLength: 128 })),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  order: Order('desc', 'by first seen, ties by id: desc is newest first'),
  cursor: Cursor,
})
export type AlertQuery = Static<typeof AlertQuery>

export const AlertList = paged(Alert)

export const Webhook = Type.Object({
  id: Type.String(),
  url: Type.String(),
  events: Type.Union([Type.Array(OneOf(EVENT_TYPES)), Type.Null()], {
    description: 'null: every alert event',
  }),
  createdAt: Time,
  previousSecretExpiresAt: TimeOrNull(
    'during a rotation, deliveries are signed with the previous secret too until then',
  ),
})

export const CreateWebhook = Type.Object(
  {
    url: Type.String({
      minLength: 1,
      maxLength: 2048,
      description: 'http or https URL events are POSTed to',
    }),
    events: Type.Optional(
      Type.Array(OneOf(ALERT_EVENTS), {
        minItems: 1,
        uniqueItems: true,
        description: 'the events it gets; absent: all of them',
      }),
    ),
    secret: Type.Optional(
      Type.String({
        minLength: 16,
        maxLength: 256,
        description: 'the signing secret; absent: one is generated (and shown once)',
      }),
    ),
  },
  { additionalProperties: false },
)
export type CreateWebhook = Static<typeof CreateWebhook>

const Secret = Type.Object({
  secret: Type.String({ description: 'shown once: keep it where the receiver checks signatures' }),
})
export const CreatedWebhook = Type.Intersect([Webhook, Secret])

export const RotateSecret = Type.Object(
  {
    secret: CreateWebhook.properties.secret,
    keepPreviousFor: Type.Integer({
      minimum: 0,
      maximum: 7 * 86_400,
      default: 86_400,
      description: 'seconds the previous secret keeps signing too (a second v1), while receivers move over',
    }),
  },
  { additionalProperties: false },
)
export type RotateSecret = Static<typeof RotateSecret>

export const WebhookList = Type.Object({ webhooks: Type.Array(Webhook) })

export const Delivery = Type.Object({
  id: Type.String(),
  eventId: Type.String({ description: 'the Iotcore-Event-Id the receiver got' }),
  eventType: OneOf(EVENT_TYPES),
  alertId: Type.Union([Type.String(), Type.Null()]),
  status: OneOf(DELIVERY_STATUSES, {
    description:
      'pending: to be sent (again); delivered: a 2xx came back; failed: given up at the end of the retry period',
  }),
  createdAt: Time,
  nextAttemptAt: TimeOrNull('while pending: when the next attempt is due'),
  finishedAt: TimeOrNull('when it was delivered or given up'),
  attempts: Type.Array(
    Type.Object({
      at: Time,
      statusCode: Type.Union([Type.Integer(), Type.Null()], {
        description: 'null: no answer (refused, timed out)',
      }),
      error: Type.Union([Type.String(), Type.Null()]),
      durationMs: Type.Integer(),
    }),
  ),
})

export const DeliveryQuery = Type.Object({
  status: Type.Optional(OneOf(DELIVERY_STATUSES)),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
  order: Order('desc', 'by creation, ties by id: desc is newest first'),
  cursor: Cursor,
})
export type DeliveryQuery = Static<typeof DeliveryQuery>

export const DeliveryList = paged(Delivery)

export const TestFired = Type.Object({
  eventId: Type.String(),
  deliveryId: Type.String({ description: 'follow it in GET /webhooks/:id/deliveries' }),
})
