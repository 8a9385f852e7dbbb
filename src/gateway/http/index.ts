import { createHash } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { CredentialCache } from '../../devices/index.js'
import { IotError } from '../../errors.js'
import { asIotError, sendError } from '../../http/errors.js'
import { withDeadline } from '../../lib/deadline.js'
import type { Metrics } from '../../metrics/index.js'
import type { Queue } from '../../queue/types.js'
import type { Claim, IdempotencyStore } from '../../store/index.js'
import { type AcceptResult, acceptPayload, quarantineRefused } from '../accept.js'
import { ACCEPTED_ENCODINGS, REFUSAL_REASONS, decodeBody } from './encoding.js'

export interface HttpIngestDeps {
  queue: Queue
  credentials: CredentialCache
  metrics: Metrics
  maxPayloadBytes: number
  /** Where Idempotency-Key records are kept (PostgreSQL). */
  idempotency: Pick<IdempotencyStore, 'claim' | 'complete' | 'release'>
}

const EMPTY = Buffer.alloc(0)
/**
 * How long a request waits for its Idempotency-Key record before going on without it: PostgreSQL down must not
 * stop HTTP ingest, which acks into the queue through an outage like every gateway. Unchecked, a retry is
 * queued again, and its readings still store once (their ids: explicit, from ts and content, or from the key).
 */
const IDEMPOTENCY_WAIT_MS = 2_000
/** What a 409 for a key in use tells the client to wait: the first attempt answers within a second. */
const IN_USE_RETRY_AFTER_SECONDS = 1

const bearer = (req: FastifyRequest) => {
  const h = req.headers.authorization
  return h?.startsWith('Bearer ') ? h.slice(7).trim() : undefined
}

/**
 * HTTP ingest: `POST /api/v1/devices/:id/telemetry` with the device's token. Answers 202 only after the
 * readings are durably queued. The body may be gzip, deflate or br encoded (Content-Encoding); an
 * Idempotency-Key header makes a retried request a no-op (docs/guarantees.md, "Idempotency-Key").
 */
export async function httpIngest(app: FastifyInstance, deps: HttpIngestDeps): Promise<void> {
  const { queue, credentials, metrics, idempotency } = deps
  // The body is kept as bytes whatever its content type: the quarantine keeps what the device sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: deps.maxPayloadBytes }, (_req, body, done) =>
    done(null, body),
  )
  let unchecked = false

  /** The key's record, or undefined when PostgreSQL does not answer in time (logged once per outage). */
  const claim = async (req: FastifyRequest, deviceId: string, key: string, hash: string) => {
    try {
      const c = await withDeadline(
        idempotency.claim(deviceId, key, hash),
        IDEMPOTENCY_WAIT_MS,
        `no answer within ${IDEMPOTENCY_WAIT_MS} ms`,
      )
      unchecked = false
      return c
    } catch (err) {
      if (!unchecked)
        req.log.warn(
          { err: (err as Error).message },
          'Idempotency-Key records unavailable; accepting unchecked',
        )
      unchecked = true
      return undefined
    }
  }

  app.post<{ Params: { id: string } }>(
    '/api/v1/devices/:id/telemetry',
    {
      bodyLimit: deps.maxPayloadBytes,
      schema: {
        tags: ['ingest'],
        summary: 'Send a reading or an array of readings (device token)',
        description:
          'Answers 202 only after the readings are durably queued. Bad readings are quarantined. The body may be ' +
          'sent with Content-Encoding gzip, deflate or br (the size limit applies once decoded). With an ' +
          'Idempotency-Key header (1 to 255 printable ASCII characters), a retry with the same key and body ' +
          'within 24 h answers the first answer again (Idempotent-Replayed: true) without queueing anything; ' +
          'another body with the key is a 422, a retry while the first attempt runs a 409.',
        params: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
        security: [{ device: [] }],
      },
      onRequest: async (req) => {
        const token = bearer(req)
        const id = (req.params as { id: string }).id
        if (!token) throw new IotError('IOT_ERR_UNAUTHORIZED', 'send Authorization: Bearer <device token>')
        if (!(await credentials.verify(id, token))) {
          req.log.info({ deviceId: id }, 'HTTP ingest refused: bad device id or token')
          throw new IotError('IOT_ERR_UNAUTHORIZED', `the token is not device ${id}'s`)
        }
        ;(req as { deviceId?: string }).deviceId = id
      },
      errorHandler: (err, req, reply) => {
        const e = asIotError(err, req)
        // An authenticated device's refused body is kept: as sent when it was read, without it past the size
        // limit (Fastify stopped reading it, or its decoding was stopped).
        const deviceId = (req as { deviceId?: string }).deviceId
        const reason = REFUSAL_REASONS.get(e.code)
        if (reason && deviceId) {
          const raw = reason === 'payload_too_large' ? EMPTY : ((req.body as Buffer | undefined) ?? EMPTY)
          quarantineRefused(queue, metrics, deviceId, 'http', raw, reason, e.message)
        }
        if (e.code === 'IOT_ERR_UNSUPPORTED_ENCODING') reply.header('accept-encoding', ACCEPTED_ENCODINGS)
        if (e.code === 'IOT_ERR_IDEMPOTENCY_KEY_IN_USE')
          reply.header('retry-after', String(IN_USE_RETRY_AFTER_SECONDS))
        return sendError(e, req, reply)
      },
    },
    async (req, reply) => {
      const deviceId = (req as unknown as { deviceId: string }).deviceId
      const raw = (req.body as Buffer | undefined) ?? EMPTY
      const encoding = req.headers['content-encoding']
      const body = encoding === undefined ? raw : await decodeBody(raw, encoding, deps.maxPayloadBytes)
      const key = idempotencyKey(req.headers['idempotency-key'])
      if (key === undefined) return accepted(reply, await accept(deviceId, body))

      const hash = createHash('sha256').update(body).digest('base64url')
      const c: Claim | undefined = await claim(req, deviceId, key, hash)
      if (c?.kind === 'replay')
        return reply
          .code(c.status)
          .header('idempotent-replayed', 'true')
          .type('application/json')
          .send(c.body)
      if (c?.kind === 'mismatch') throw new IotError('IOT_ERR_IDEMPOTENCY_KEY_REUSED', key)
      if (c?.kind === 'in_progress') throw new IotError('IOT_ERR_IDEMPOTENCY_KEY_IN_USE', key)
      let result: AcceptResult
      try {
        result = await accept(deviceId, body, key)
      } catch (err) {
        // No reading was queued: a retry is judged afresh (a 503 retried later may well be taken).
        if (c) idempotency.release(deviceId, key).catch(() => {})
        throw err
      }
      if (c) {
        // Best effort: unrecorded, the claim is taken over by a retry after 30 s, and its readings dedup.
        await idempotency
          .complete(deviceId, key, 202, JSON.stringify(responseBody(result)))
          .catch((err) => req.log.warn({ err: err.message }, 'the Idempotency-Key answer was not recorded'))
      }
      return accepted(reply, result)
    },
  )

  const accept = (deviceId: string, body: Buffer, key?: string) => {
    if (queue.stats().full) throw new IotError('IOT_ERR_QUEUE_FULL', 'the disk budget is spent')
    return acceptPayload(queue, metrics, deviceId, 'http', body, Date.now(), true, key)
  }
}

/** The 202, with or without an Idempotency-Key: one body, the one a replay answers again. */
function accepted(reply: FastifyReply, r: AcceptResult): FastifyReply {
  return reply.code(202).send(responseBody(r))
}

function responseBody(r: AcceptResult): Record<string, unknown> {
  const out: Record<string, unknown> = { accepted: r.accepted }
  if (r.quarantined > 0) {
    out.quarantined = r.quarantined
    out.errors = r.errors.map((e) => ({ index: e.index, reason: e.reason, detail: e.detail }))
  }
  return out
}

/**
 * The Idempotency-Key header: a Structured Field String (draft-ietf-httpapi-idempotency-key-header-06, RFC
 * 8941 §3.3.3), so quoted, `"8e03978e-..."`; the bare form Stripe's clients send is taken too. Its content is
 * printable ASCII, as an sf-string's must be, up to 255 characters (Stripe's limit).
 */
function idempotencyKey(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined
  let v = (Array.isArray(header) ? header.join(', ') : header).trim()
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\(["\\])/g, '$1')
  if (!/^[\x20-\x7e]{1,255}$/.test(v))
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      "header 'idempotency-key' must be 1 to 255 printable ASCII characters, such as a UUID",
    )
  return v
}
