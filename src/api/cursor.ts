import { createHash } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { IotError } from '../errors.js'

/**
 * Page cursors. Opaque to clients (base64url of JSON), holding where the page ended (the store's keysets) and
 * a digest of the query it continues: a cursor sent with other keys, bounds, filters or order is refused
 * rather than silently continuing something else. They hold no secret and grant nothing: a forged one can
 * only name a place to start, and is checked like any input.
 */

/** The parameters that make a query itself (not its page size), in a fixed order. */
export type QueryIdentity = ReadonlyArray<string | number | null | readonly string[]>

export function encodeCursor(query: QueryIdentity, position: unknown): string {
  return Buffer.from(JSON.stringify({ q: digest(query), p: position })).toString('base64url')
}

/** The position in a cursor from the client; IOT_ERR_BAD_REQUEST if it is damaged or another query's. */
export function decodeCursor<T>(raw: string, query: QueryIdentity, valid: (p: unknown) => p is T): T {
  let doc: { q?: unknown; p?: unknown } | undefined
  try {
    doc = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'))
  } catch {
    doc = undefined
  }
  if (doc === null || typeof doc !== 'object' || !valid(doc.p))
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      'cursor is damaged: send the cursor of the page before as it came, or no cursor to start over',
    )
  if (doc.q !== digest(query))
    throw new IotError(
      'IOT_ERR_BAD_REQUEST',
      'cursor belongs to another query: send it with the same parameters as the page it came from (only limit may change)',
    )
  return doc.p as T
}

/**
 * Tells the client where the next page is, when there is one: `Iotcore-Next-Cursor` (the cursor alone) and
 * `Link: <...>; rel="next"` (RFC 8288: this request's URL with the cursor, which HTTP libraries follow).
 */
export function linkNext(req: FastifyRequest, reply: FastifyReply, cursor: string | null): void {
  if (cursor === null) return
  const url = new URL(req.url, 'http://localhost')
  url.searchParams.set('cursor', cursor)
  reply.header('iotcore-next-cursor', cursor)
  reply.header('link', `<${url.pathname}${url.search}>; rel="next"`)
}

const digest = (query: QueryIdentity) =>
  createHash('sha256').update(JSON.stringify(query)).digest('base64url').slice(0, 16)
