import { randomBytes } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { IotError } from '../errors.js'
import { ALERT_ID, type Severity, type Store, WEBHOOK_ID } from '../store/index.js'
import {
  Alert,
  AlertList,
  AlertQuery,
  CreatedWebhook,
  CreateWebhook,
  DeliveryList,
  DeliveryQuery,
  RotateSecret,
  TestFired,
  Webhook,
  WebhookList,
} from './alert-schemas.js'
import type { AlertStream } from './alert-stream.js'
import { keysetPage, type QueryIdentity } from './cursor.js'
import { adminRoute, checkText, found, listRoute } from './index.js'
import { IdParam } from './schemas.js'

export interface AlertRoutesDeps {
  store: Store
  stream: AlertStream
}

/** A webhook URL: http or https, as the WHATWG parser normalizes it; anything else is a 400 naming it. */
function webhookUrl(raw: string): string {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    throw new IotError('IOT_ERR_BAD_REQUEST', `url ${JSON.stringify(raw)} is not a URL`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new IotError('IOT_ERR_BAD_REQUEST', `url must be http or https, not ${u.protocol}`)
  return u.href
}

function secretOrNew(secret: string | undefined): string {
  if (secret === undefined) return `whsec_${randomBytes(24).toString('base64url')}`
  checkText('secret', secret)
  return secret
}

const STREAM_DESCRIPTION =
  'Server-Sent Events: `alert.opened`, `alert.acknowledged` and `alert.cleared`, each as `id: <n>`, `event: ' +
  '<type>` and `data: {id, type, createdAt, data: {alert}}`, sent once the change is committed, whichever ' +
  'process made it. A client reconnecting with `Last-Event-ID` (as EventSource does) first gets the events it ' +
  'missed (up to 1000). A comment line every 20 s keeps the stream open through proxies. Needs the admin token ' +
  'in the Authorization header.'

/** Alerts (list, acknowledge, clear, stream) and webhooks (register, list, delete, test, rotate, deliveries). */
export async function alertRoutes(root: FastifyInstance, deps: AlertRoutesDeps): Promise<void> {
  const app = root.withTypeProvider<TypeBoxTypeProvider>()
  const { store, stream } = deps

  // A stream is a request that never ends: the server can only close once they are ended.
  app.addHook('preClose', async () => stream.closeClients())

  app.get(
    '/alerts',
    listRoute('alerts', 'Alerts of devices and services, filtered', AlertQuery, AlertList),
    async (req, reply) => {
      const q = req.query
      const severity = q.severity ? ([...new Set(q.severity.split(','))] as Severity[]) : undefined
      const query: QueryIdentity = [
        'alerts',
        q.status ?? null,
        q.acknowledged === undefined ? null : String(q.acknowledged),
        severity ? [...severity].sort() : null,
        q.deviceId ?? null,
        q.service ?? null,
        q.type ?? null,
        q.order,
      ]
      const page = await keysetPage(req, reply, { query, cursor: q.cursor, idPattern: ALERT_ID }, (after) =>
        store.alerts.list({ ...q, severity, after }),
      )
      return { items: page.items, next: page.next }
    },
  )

  app.get(
    '/alerts/stream',
    adminRoute('alerts', 'Alert events as they happen (Server-Sent Events)', {
      description: STREAM_DESCRIPTION,
    }),
    async (req, reply) => {
      const raw = req.headers['last-event-id']
      const last = typeof raw === 'string' && /^\d{1,15}$/.test(raw.trim()) ? Number(raw.trim()) : undefined
      reply.hijack()
      await stream.attach(reply.raw, last)
    },
  )

  app.get(
    '/alerts/:id',
    adminRoute('alerts', 'Read an alert', { params: IdParam, response: { 200: Alert } }),
    async (req) => found(await store.alerts.get(req.params.id), 'IOT_ERR_ALERT_NOT_FOUND', req.params.id),
  )

  app.post(
    '/alerts/:id/ack',
    adminRoute('alerts', 'Acknowledge an alert (active or cleared); again changes nothing', {
      params: IdParam,
      response: { 200: Alert },
    }),
    async (req) =>
      found(await store.alerts.acknowledge(req.params.id), 'IOT_ERR_ALERT_NOT_FOUND', req.params.id),
  )

  app.post(
    '/alerts/:id/clear',
    adminRoute(
      'alerts',
      'Clear an alert, for good (the next occurrence opens a new one); again changes nothing',
      {
        params: IdParam,
        response: { 200: Alert },
      },
    ),
    async (req) =>
      found(await store.alerts.clearById(req.params.id), 'IOT_ERR_ALERT_NOT_FOUND', req.params.id),
  )

  app.post(
    '/webhooks',
    adminRoute('webhooks', 'Register a webhook: alert events are POSTed to it, signed', {
      description:
        'Each delivery is a POST of the event as JSON with `Iotcore-Event-Id` (dedupe on it: a delivery may ' +
        'come again) and `Iotcore-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. A 2xx ' +
        'answer delivers it; anything else is retried with backoff for IOTCORE_WEBHOOK_RETRY_FOR (3 days). ' +
        "An alert's events arrive in order.",
      body: CreateWebhook,
      response: { 201: CreatedWebhook },
    }),
    async (req, reply) => {
      const secret = secretOrNew(req.body.secret)
      const w = await store.webhooks.create({
        url: webhookUrl(req.body.url),
        events: req.body.events ?? null,
        secret,
      })
      return reply.code(201).send({ ...w, secret })
    },
  )

  app.get(
    '/webhooks',
    adminRoute('webhooks', 'The webhooks (their secrets are not shown again)', {
      response: { 200: WebhookList },
    }),
    async () => ({ webhooks: await store.webhooks.list() }),
  )

  app.get(
    '/webhooks/:id',
    adminRoute('webhooks', 'Read a webhook', { params: IdParam, response: { 200: Webhook } }),
    async (req) => found(await store.webhooks.get(req.params.id), 'IOT_ERR_WEBHOOK_NOT_FOUND', req.params.id),
  )

  app.delete(
    '/webhooks/:id',
    adminRoute('webhooks', 'Delete a webhook, with its deliveries (pending ones are not sent)', {
      params: IdParam,
    }),
    async (req, reply) => {
      if (!(await store.webhooks.delete(req.params.id)))
        throw new IotError('IOT_ERR_WEBHOOK_NOT_FOUND', req.params.id)
      return reply.code(204).send()
    },
  )

  app.post(
    '/webhooks/:id/test',
    adminRoute('webhooks', 'Send it a `webhook.test` event, delivered like any other', {
      params: IdParam,
      response: { 202: TestFired },
    }),
    async (req, reply) =>
      reply
        .code(202)
        .send(found(await store.webhooks.test(req.params.id), 'IOT_ERR_WEBHOOK_NOT_FOUND', req.params.id)),
  )

  app.post(
    '/webhooks/:id/secret',
    adminRoute('webhooks', 'Rotate its secret; the previous one keeps signing for keepPreviousFor seconds', {
      params: IdParam,
      body: Type.Optional(RotateSecret),
      response: { 200: CreatedWebhook },
    }),
    async (req) => {
      const secret = secretOrNew(req.body?.secret)
      const w = await store.webhooks.rotateSecret(req.params.id, secret, req.body?.keepPreviousFor ?? 86_400)
      return { ...found(w, 'IOT_ERR_WEBHOOK_NOT_FOUND', req.params.id), secret }
    },
  )

  app.get(
    '/webhooks/:id/deliveries',
    listRoute('webhooks', "A webhook's deliveries, with every attempt", DeliveryQuery, DeliveryList, IdParam),
    async (req, reply) => {
      // listRoute's params are IdParam: validated, though not typed through its optional argument.
      const { id } = req.params as { id: string }
      const q = req.query
      if (!(await store.webhooks.get(id))) throw new IotError('IOT_ERR_WEBHOOK_NOT_FOUND', id)
      const query: QueryIdentity = ['deliveries', id, q.status ?? null, q.order]
      const page = await keysetPage(req, reply, { query, cursor: q.cursor, idPattern: WEBHOOK_ID }, (after) =>
        store.webhooks.deliveries(id, { status: q.status, limit: q.limit, order: q.order, after }),
      )
      return { items: page.items, next: page.next }
    },
  )
}
