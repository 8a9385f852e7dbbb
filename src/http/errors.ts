import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify'
import { type ErrorCode, IotError } from '../errors.js'

/** What a 503 (queue full or unreachable) tells clients to wait before retrying. */
export const RETRY_AFTER_SECONDS = 5

/** Every HTTP error body: the shape the OpenAPI document declares as `Error` (api/schemas.ts). */
export interface ErrorBody {
  statusCode: number
  code: ErrorCode
  error: string
  message: string
}

/**
 * Any error met while serving a request, as the coded error its client is told: an IotError as it is,
 * Fastify's own request errors (body too large, bad JSON, wrong content type) as their registry codes, any
 * other client error as IOT_ERR_BAD_REQUEST, and everything else as IOT_ERR_INTERNAL, its cause kept for the
 * log.
 */
export function asIotError(err: unknown, req: FastifyRequest): IotError {
  if (err instanceof IotError) return err
  const e = err as Partial<FastifyError>
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const size = Number(req.headers['content-length'])
      return new IotError(
        'IOT_ERR_PAYLOAD_TOO_LARGE',
        [size > 0 ? `${size} bytes` : 'no Content-Length given', req.routeOptions.bodyLimit],
        { cause: err },
      )
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new IotError('IOT_ERR_UNSUPPORTED_MEDIA_TYPE', req.headers['content-type'] ?? '', { cause: err })
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new IotError('IOT_ERR_MALFORMED_JSON', 'it is empty', { cause: err })
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new IotError('IOT_ERR_MALFORMED_JSON', 'it does not parse', { cause: err })
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
    return new IotError('IOT_ERR_BAD_REQUEST', e.message ?? STATUS_CODES[e.statusCode] ?? '', { cause: err })
  return new IotError('IOT_ERR_INTERNAL', [], { cause: err })
}

/** The one rendering of an error as an HTTP answer: status, body, and Retry-After on a 503. */
export function renderError(err: IotError): {
  status: number
  headers: Record<string, string>
  body: ErrorBody
} {
  const status = err.statusCode
  return {
    status,
    // A full or unreachable queue is temporary: say when to come back.
    headers: status === 503 ? { 'retry-after': String(RETRY_AFTER_SECONDS) } : {},
    body: {
      statusCode: status,
      code: err.code,
      error: STATUS_CODES[status] ?? 'Error',
      message: err.message,
    },
  }
}

/**
 * Answers a request with an error: the server's error handler, and every route's own error path. A 500 is
 * logged with what caused it; its client is only told to look at the log.
 */
export function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const e = asIotError(err, req)
  if (e.statusCode >= 500) req.log.error({ err: e.cause ?? e }, 'request failed')
  const { status, headers, body } = renderError(e)
  return reply.code(status).headers(headers).send(body)
}

/**
 * Fastify's schema errors, as one message a person can act on. Ajv reports a failed choice (`agg=median`
 * against avg|min|max|sum|count) once per alternative plus once for the choice: six parts saying one thing.
 * Here a choice of constants becomes "must be one of ...", and otherwise the first error is told.
 */
export function schemaErrorFormatter(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const first = errors.find((e) => e.keyword === 'anyOf') ?? errors[0]
  const path = first.instancePath
  let message: string
  if (first.keyword === 'anyOf') {
    const allowed = errors
      .filter((e) => e.instancePath === path && e.keyword === 'const')
      .map((e) => String(e.params.allowedValue))
    message = allowed.length > 0 ? `must be one of ${allowed.join(', ')}` : (first.message ?? 'is not valid')
  } else if (first.keyword === 'enum') {
    message = `must be one of ${(first.params.allowedValues as unknown[]).join(', ')}`
  } else if (first.keyword === 'required') {
    return new IotError(
      'IOT_ERR_BAD_REQUEST',
      `${where(dataVar, `${path}/${first.params.missingProperty}`)} is required`,
    )
  } else {
    message = first.message ?? 'is not valid'
  }
  return new IotError('IOT_ERR_BAD_REQUEST', `${where(dataVar, path)} ${message}`)
}

/** Names the offending part of a request as its sender would: `query parameter 'agg'`, `body field 'name'`. */
function where(dataVar: string, instancePath: string): string {
  const name = instancePath.slice(1).replaceAll('/', '.')
  const part =
    { querystring: 'query parameter', params: 'path parameter', headers: 'header', body: 'body field' }[
      dataVar
    ] ?? dataVar
  if (name) return `${part} '${name}'`
  return dataVar === 'querystring' ? 'the query string' : `the ${dataVar}`
}
