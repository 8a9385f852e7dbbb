import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { ErrorCodes, IotError } from '../../src/errors.js'
import { createHttpServer } from '../../src/http/server.js'
import { type Platform, startPlatform } from '../helpers/index.js'

/** Every error body has these four fields, and a code from the registry. */
function assertErrorBody(body: Record<string, unknown>, status: number, code: string): void {
  assert.deepEqual(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'])
  assert.equal(body.statusCode, status)
  assert.equal(body.code, code)
  assert.ok(code in ErrorCodes)
  assert.equal(typeof body.message, 'string')
}

describe('HTTP errors: one rendering for every path', () => {
  let app: FastifyInstance
  let base: string
  const logged: Array<Record<string, any>> = []

  before(async () => {
    const log = pino({ level: 'error' }, { write: (line: string) => logged.push(JSON.parse(line)) })
    app = await createHttpServer(log, 1024)
    app.get('/bug', async () => {
      throw new Error('a detail only the log may see')
    })
    app.get('/full', async () => {
      throw new IotError('IOT_ERR_QUEUE_FULL', 'the disk budget is spent')
    })
    app.post(
      '/things',
      { schema: { body: Type.Object({ name: Type.String({ minLength: 1 }) }) } },
      async (req) => req.body,
    )
    app.get(
      '/pick',
      {
        schema: {
          querystring: Type.Object({
            agg: Type.Union([Type.Literal('avg'), Type.Literal('min'), Type.Literal('max')]),
          }),
        },
      },
      async (req) => req.query,
    )
    await app.listen({ port: 0, host: '127.0.0.1' })
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  })
  after(() => app.close())

  const call = async (path: string, init?: RequestInit) => {
    const r = await fetch(base + path, init)
    return { status: r.status, headers: r.headers, body: await r.json() }
  }
  const post = (path: string, body: string, type = 'application/json') =>
    call(path, { method: 'POST', headers: { 'content-type': type }, body })

  test('an unexpected failure is 500 IOT_ERR_INTERNAL; the client gets no detail, the log gets the cause', async () => {
    const r = await call('/bug')
    assert.equal(r.status, 500)
    assertErrorBody(r.body, 500, 'IOT_ERR_INTERNAL')
    assert.doesNotMatch(r.body.message, /detail only the log/)
    assert.ok(logged.some((l) => JSON.stringify(l.err ?? {}).includes('a detail only the log may see')))
  })

  test('a 503 says when to retry', async () => {
    const r = await call('/full')
    assert.equal(r.status, 503)
    assert.equal(r.headers.get('retry-after'), '5')
    assertErrorBody(r.body, 503, 'IOT_ERR_QUEUE_FULL')
  })

  test('an unknown route is a coded 404', async () => {
    const r = await call('/nowhere?x=1')
    assertErrorBody(r.body, 404, 'IOT_ERR_NOT_FOUND')
    assert.match(r.body.message, /GET \/nowhere;/)
  })

  test("Fastify's own request errors get registry codes: bad or empty JSON, wrong content type, body too large", async () => {
    assertErrorBody((await post('/things', '{"name":')).body, 400, 'IOT_ERR_MALFORMED_JSON')
    assertErrorBody((await post('/things', '')).body, 400, 'IOT_ERR_MALFORMED_JSON')
    assertErrorBody((await post('/things', 'name=x', 'text/csv')).body, 415, 'IOT_ERR_UNSUPPORTED_MEDIA_TYPE')
    const big = await post('/things', JSON.stringify({ name: 'x'.repeat(2000) }))
    assertErrorBody(big.body, 413, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    assert.match(big.body.message, /\(2011 bytes\); the limit is 1024 bytes/)
  })

  test('a schema error is one message naming the parameter and what it accepts', async () => {
    const r = await call('/pick?agg=median')
    assertErrorBody(r.body, 400, 'IOT_ERR_BAD_REQUEST')
    assert.equal(r.body.message, "query parameter 'agg' must be one of avg, min, max")
    const missing = await post('/things', '{}')
    assertErrorBody(missing.body, 400, 'IOT_ERR_BAD_REQUEST')
    assert.equal(missing.body.message, "body field 'name' is required")
    const short = await post('/things', '{"name":""}')
    assert.equal(short.body.message, "body field 'name' must NOT have fewer than 1 characters")
  })
})

describe('HTTP errors on the platform', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({ IOTCORE_MAX_PAYLOAD_BYTES: '4096' })
  })
  after(() => p.stop())

  test('a bad agg on the telemetry query is one clear message', async () => {
    const dev = await p.createDevice('agg')
    const r = await p.req('GET', `/api/v1/devices/${dev.id}/telemetry?keys=speed&agg=median&interval=1m`)
    assertErrorBody(r.body, 400, 'IOT_ERR_BAD_REQUEST')
    assert.equal(r.body.message, "query parameter 'agg' must be one of avg, min, max, sum, count")
  })

  test('the 413 of HTTP ingest has the same body as every other error', async () => {
    const dev = await p.createDevice('big')
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify({ note: 'x'.repeat(5000) }),
    })
    assert.equal(r.status, 413)
    const body = await r.json()
    assertErrorBody(body, 413, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    assert.equal(body.error, 'Payload Too Large')
    assert.match(body.message, /\(5011 bytes\); the limit is 4096 bytes/)
  })
})
