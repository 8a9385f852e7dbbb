import { createHash } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { IotError } from '../errors.js'
import { isKeyset, type Keyset, type Page } from '../store/index.js'

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

/**
 * One page of a list paged by one keyset (devices, quarantine): the client's `cursor`, checked against this
 * query, says where to start (`idPattern`: the form of the list's ids); `read` reads the page; where the next
 * one starts goes to the headers and back to the caller for the body's `next`.
 */
export async function keysetPage<T>(
  req: FastifyRequest,
  reply: FastifyReply,
  list: { query: QueryIdentity; cursor: string | undefined; idPattern?: RegExp },
  read: (after: Keyset | undefined) => Promise<Page<T>>,
): Promise<{ items: T[]; next: string | null }> {
  const { query, cursor, idPattern } = list
  const after =
    cursor === undefined ? undefined : decodeCursor(cursor, query, (p): p is Keyset => isKeyset(p, idPattern))
  const page = await read(after)
  const next = page.next && encodeCursor(query, page.next)
  linkNext(req, reply, next)
  return { items: page.items, next }
}

const digest = (query: QueryIdentity) =>
  createHash('sha256').update(JSON.stringify(query)).digest('base64url').slice(0, 16)
