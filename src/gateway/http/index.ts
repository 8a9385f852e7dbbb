import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { CredentialCache } from '../../devices/index.js'
import { IotError } from '../../errors.js'
import { asIotError, sendError } from '../../http/errors.js'
import type { Metrics } from '../../metrics/index.js'
import type { Queue } from '../../queue/types.js'
import { acceptPayload, quarantineRefused } from '../accept.js'

export interface HttpIngestDeps {
  queue: Queue
  credentials: CredentialCache
  metrics: Metrics
  maxPayloadBytes: number
}

const bearer = (req: FastifyRequest) => {
  const h = req.headers.authorization
  return h?.startsWith('Bearer ') ? h.slice(7).trim() : undefined
}

/**
 * HTTP ingest: `POST /api/v1/devices/:id/telemetry` with the device's token. Answers 202 only after the
 * readings are durably queued.
 */
export async function httpIngest(app: FastifyInstance, deps: HttpIngestDeps): Promise<void> {
  const { queue, credentials, metrics } = deps
  // The body is kept as bytes whatever its content type: the quarantine keeps what the device sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: deps.maxPayloadBytes }, (_req, body, done) =>
    done(null, body),
  )

  app.post<{ Params: { id: string } }>(
    '/api/v1/devices/:id/telemetry',
    {
      bodyLimit: deps.maxPayloadBytes,
      schema: {
        tags: ['ingest'],
        summary: 'Send a reading or an array of readings (device token)',
        description: 'Answers 202 only after the readings are durably queued. Bad readings are quarantined.',
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
        // An authenticated device's refused payload is kept (without its bytes, which were not read).
        const deviceId = (req as { deviceId?: string }).deviceId
        if (e.code === 'IOT_ERR_PAYLOAD_TOO_LARGE' && deviceId)
          quarantineRefused(queue, metrics, deviceId, 'http', Buffer.alloc(0), 'payload_too_large', e.message)
        return sendError(e, req, reply)
      },
    },
    async (req, reply) => {
      const deviceId = (req as unknown as { deviceId: string }).deviceId
      const body = (req.body as Buffer | undefined) ?? Buffer.alloc(0)
      if (queue.stats().full) throw new IotError('IOT_ERR_QUEUE_FULL', 'the disk budget is spent')
      const r = await acceptPayload(queue, metrics, deviceId, 'http', body, Date.now())
      const out: Record<string, unknown> = { accepted: r.accepted }
      if (r.quarantined > 0) {
        out.quarantined = r.quarantined
        out.errors = r.errors.map((e) => ({ index: e.index, reason: e.reason, detail: e.detail }))
      }
      return reply.code(202).send(out)
    },
  )
}
