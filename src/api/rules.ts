import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { IotError } from '../errors.js'
import { isValueName, LIMITS } from '../readings/index.js'
import {
  GAP_ID,
  type NewRule,
  RULE_NAME,
  type RuleCondition,
  type RuleTrigger,
  type Store,
} from '../store/index.js'
import { keysetPage, type QueryIdentity } from './cursor.js'
import { adminRoute, checkArguments, found, refuseOffset } from './index.js'
import { Cursor, IdParam, NEXT_HEADERS, Next, Order } from './schemas.js'

/** The longest clock a rule may keep: a year. */
const MAX_SECONDS = 365 * 86_400
/** A repeating rule remembers up to this many hits per device. */
const MAX_REPEATS = 1000

const Seconds = (what: string) =>
  Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SECONDS, description: `seconds: ${what}` }))

// One object per part, its fields optional and checked together in the handler: a union of objects would meet
// Fastify's removeAdditional, which strips the fields of one branch while it tries another.
const Condition = Type.Object(
  {
    type: Type.Union([Type.Literal('range'), Type.Literal('missing'), Type.Literal('stuck')], {
      description:
        'range: the value under key is outside [min, max] (or not a number); missing: the reading has no ' +
        'key; stuck: the value has not changed for `seconds`',
    }),
    key: Type.String({
      minLength: 1,
      maxLength: LIMITS.maxKeyLength,
      description: 'a value key, e.g. coolant',
    }),
    min: Type.Optional(Type.Number({ description: 'range: the lowest value allowed' })),
    max: Type.Optional(Type.Number({ description: 'range: the highest value allowed' })),
    seconds: Seconds('stuck: how long one value may last'),
  },
  { additionalProperties: false },
)

const Trigger = Type.Object(
  {
    type: Type.Union([Type.Literal('simple'), Type.Literal('duration'), Type.Literal('repeating')], {
      description:
        'simple: every reading that meets the condition; duration: once it has held for `seconds` (by the ' +
        "readings' ts), every reading while it goes on holding; repeating: once it held `count` times within " +
        '`seconds`',
    }),
    seconds: Seconds('duration and repeating: the time'),
    count: Type.Optional(
      Type.Integer({ minimum: 2, maximum: MAX_REPEATS, description: 'repeating: how many times' }),
    ),
  },
  { additionalProperties: false },
)

const CreateRule = Type.Object(
  {
    name: Type.String({
      pattern: RULE_NAME.source,
      description: 'unique; a reading that breaks the rule is flagged `rule:<name>`',
    }),
    deviceId: Type.Optional(
      Type.String({ minLength: 1, maxLength: 64, description: 'the one device it applies to' }),
    ),
    attributes: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description:
          'a device group: every device whose attributes contain these (each key with this value; jsonb @>), ' +
          'now or when created later. Without deviceId and attributes: every device',
      }),
    ),
    condition: Condition,
    trigger: Type.Optional(Trigger),
  },
  { additionalProperties: false },
)
type CreateRule = Static<typeof CreateRule>

const RuleBody = Type.Object({
  id: Type.String(),
  name: Type.String(),
  deviceId: Type.Union([Type.String(), Type.Null()]),
  attributes: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  condition: Condition,
  trigger: Trigger,
  createdAt: Type.String({ format: 'date-time' }),
})

const GapsQuery = Type.Object({
  status: Type.Union([Type.Literal('open'), Type.Literal('closed'), Type.Literal('all')], { default: 'all' }),
  limit: Type.Integer({ minimum: 1, maximum: 10000, default: 100 }),
  order: Order('desc', 'by the time the gap was found, ties by id: desc is newest first'),
  cursor: Cursor,
})

const GapBody = Type.Object({
  id: Type.String(),
  from: Type.Integer({ description: 'the first seq missing when the gap was found' }),
  to: Type.Integer({ description: 'the last seq missing when the gap was found' }),
  missing: Type.Array(Type.Tuple([Type.Integer(), Type.Integer()]), {
    description: 'what has still not arrived, as inclusive [first, last] ranges',
  }),
  missingCount: Type.Integer(),
  status: Type.Union([Type.Literal('open'), Type.Literal('closed')], {
    description:
      'closed: everything missing arrived (missing is empty), or the counter restarted (missing is what never came)',
  }),
  openedAt: Type.String({ format: 'date-time' }),
  closedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  alertedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
    description: 'when it had stayed open past IOTCORE_GAP_ALERT_AFTER and its sequence_gap alert was raised',
  }),
})

/** A rule's condition and trigger as given, checked together: each field where its type needs it, and only there. */
function checkRule(body: CreateRule): NewRule {
  const c = body.condition
  const t = body.trigger ?? { type: 'simple' }
  const bad = (message: string): never => {
    throw new IotError('IOT_ERR_BAD_REQUEST', message)
  }
  if (!isValueName(c.key))
    bad(`condition.key '${c.key}' cannot name a value (ts, msgId, values, __proto__, ...)`)
  if (body.deviceId !== undefined && body.attributes !== undefined)
    bad('give deviceId (one device) or attributes (a group of devices), not both')
  checkArguments('attributes', body.attributes)
  let condition: RuleCondition
  if (c.type === 'range') {
    if (c.min === undefined && c.max === undefined) bad('a range condition needs min, max or both')
    if (c.min !== undefined && c.max !== undefined && c.min > c.max)
      bad(`min (${c.min}) is above max (${c.max})`)
    if (c.seconds !== undefined)
      bad('seconds belongs to a stuck condition; for how long a range may be left, use a duration trigger')
    condition = {
      type: 'range',
      key: c.key,
      ...(c.min !== undefined && { min: c.min }),
      ...(c.max !== undefined && { max: c.max }),
    }
  } else if (c.type === 'missing') {
    if (c.min !== undefined || c.max !== undefined || c.seconds !== undefined)
      bad('a missing condition takes only key')
    condition = { type: 'missing', key: c.key }
  } else {
    if (c.seconds === undefined) bad('a stuck condition needs seconds: how long one value may last')
    if (c.min !== undefined || c.max !== undefined) bad('a stuck condition takes key and seconds only')
    if (t.type !== 'simple') bad('a stuck condition has its own time (seconds); its trigger is simple')
    condition = { type: 'stuck', key: c.key, seconds: c.seconds! }
  }
  let trigger: RuleTrigger
  if (t.type === 'simple') {
    if (t.seconds !== undefined || t.count !== undefined) bad('a simple trigger takes no seconds or count')
    trigger = { type: 'simple' }
  } else if (t.type === 'duration') {
    if (t.seconds === undefined) bad('a duration trigger needs seconds: how long the condition must hold')
    if (t.count !== undefined) bad('count belongs to a repeating trigger')
    trigger = { type: 'duration', seconds: t.seconds! }
  } else {
    if (t.seconds === undefined || t.count === undefined)
      bad('a repeating trigger needs count and seconds: how many times within how long')
    trigger = { type: 'repeating', count: t.count!, seconds: t.seconds! }
  }
  return {
    name: body.name,
    ...(body.deviceId !== undefined && { deviceId: body.deviceId }),
    ...(body.attributes !== undefined && { attributes: body.attributes }),
    condition,
    trigger,
  }
}

/** Quality rules (POST/GET/DELETE /rules) and sequence gaps (GET /devices/:id/gaps), under the admin API. */
export async function qualityRoutes(root: FastifyInstance, deps: { store: Store }): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>()
  const { store } = deps

  app.post(
    '/rules',
    adminRoute('rules', 'Create a quality rule for one device, a group of devices or all', {
      description:
        'The ingest judges every reading it stores against the rules of its device, beside the built-in ' +
        'checks (gps_zero, gps_jump, ts_future, ts_old, type_changed). A reading that breaks one is stored ' +
        'flagged `rule:<name>` (GET /devices/:id/telemetry?flagged=true) and counts against its device: past ' +
        'IOTCORE_DEVICE_CHECK_VIOLATIONS flagged readings within IOTCORE_DEVICE_CHECK_WINDOW seconds, a ' +
        '`device_check` alert is raised. Rules cannot be edited: delete one and create another.',
      body: CreateRule,
      response: { 201: RuleBody },
    }),
    async (req, reply) => reply.code(201).send(await store.rules.create(checkRule(req.body))),
  )

  app.get(
    '/rules',
    adminRoute('rules', 'List the quality rules, oldest first', {
      response: { 200: Type.Object({ rules: Type.Array(RuleBody) }) },
    }),
    async () => ({ rules: await store.rules.list() }),
  )

  app.get(
    '/rules/:id',
    adminRoute('rules', 'Read a quality rule', { params: IdParam, response: { 200: RuleBody } }),
    async (req) => found(await store.rules.get(req.params.id), 'IOT_ERR_RULE_NOT_FOUND', req.params.id),
  )

  app.delete(
    '/rules/:id',
    adminRoute('rules', 'Delete a quality rule (the flags it set stay on their readings)', {
      params: IdParam,
    }),
    async (req, reply) => {
      if (!(await store.rules.delete(req.params.id)))
        throw new IotError('IOT_ERR_RULE_NOT_FOUND', req.params.id)
      return reply.code(204).send()
    },
  )

  app.get(
    '/devices/:id/gaps',
    {
      ...adminRoute('telemetry', 'Gaps in the sequence numbers (`seq`) the device sends, a page at a time', {
        description:
          'A device may send an integer `seq` value in its readings, one more each time. A seq beyond the next ' +
          'opens a gap of what was skipped; readings that arrive later (late or resent) fill it, and it closes ' +
          'when nothing of it is missing. A gap open for IOTCORE_GAP_ALERT_AFTER seconds raises a sequence_gap ' +
          'alert, cleared once no gap that old is open. A seq of 0 or 1 below the highest seen is a restart ' +
          '(a reboot, a wrapped counter): the open gaps close with what they still miss.',
        params: IdParam,
        querystring: GapsQuery,
        response: {
          200: Type.Object({ gaps: Type.Array(GapBody), next: Next }, { headers: NEXT_HEADERS }),
        },
      }),
      preHandler: refuseOffset,
    },
    async (req, reply) => {
      const id = req.params.id
      if (!(await store.devices.get(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      const { status, limit, order, cursor } = req.query
      const query: QueryIdentity = ['gaps', id, status, order]
      const page = await keysetPage(req, reply, { query, cursor, idPattern: GAP_ID }, (after) =>
        store.gaps.list({ deviceId: id, status, limit, order, after }),
      )
      return { gaps: page.items, next: page.next }
    },
  )
}
