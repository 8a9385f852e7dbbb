import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES, createServer } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { CredentialCache } from '../../devices/index.js'
import { IotError } from '../../errors.js'
import { renderError } from '../../http/errors.js'
import type { Metrics } from '../../metrics/index.js'
import type { Queue } from '../../queue/types.js'
import { acceptDecoded, quarantineRefused } from '../accept.js'
import { bind, closeWithin } from '../listen.js'
import { RefusedPeers, WINDOW_MS } from '../refusals.js'
import { type Decoded, decodeJson, decodeQuery } from './decode.js'

/** A request whose headers are not all in after this long is answered 408 and closed (node's headersTimeout). */
const HEADERS_TIMEOUT_MS = 10_000
/**
 * A whole request (headers and body) must be in within this (node's requestTimeout): a fix is a few hundred
 * bytes, and a phone on a poor link still sends it in seconds. Past it: 408, closed, logged.
 */
const REQUEST_TIMEOUT_MS = 30_000
/** How often node looks for requests past those timeouts (its default, 30 s, would let them run far over). */
const TIMEOUT_CHECK_MS = 1000

export interface OsmAndGatewayOptions {
  host: string
  port: number
  maxPayloadBytes: number
}

/**
 * The OsmAnd listener (Traccar Client and other OsmAnd senders, decode.ts) on its own port, answering 200 only
 * once the fix is durably queued. A small node:http server rather than a second Fastify instance or routes on
 * the API's: the protocol is one endpoint on any path (the apps post to the server URL as the user typed it), it
 * takes a body in any content type as bytes (kept as sent for the quarantine), and answers with a status and
 * no body; node's own header and request timeouts bound slow senders. Errors have the API's body
 * (docs/errors.md): the apps show the status, a person debugging with curl reads the message.
 */
export class OsmAndGateway {
  /** The node:http server, once started (its timeouts may be changed while it runs). */
  server: Server | undefined
  private readonly peers: RefusedPeers
  /** Responses to requests whose body is still being read, by socket: where a timeout is answered. */
  private readonly reading = new WeakMap<Socket, ServerResponse>()
  port = 0

  constructor(
    private readonly opts: OsmAndGatewayOptions,
    private readonly queue: Queue,
    private readonly credentials: CredentialCache,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.peers = new RefusedPeers('osmand', metrics, log)
  }

  async start(): Promise<void> {
    const server = createServer(
      {
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        connectionsCheckingInterval: TIMEOUT_CHECK_MS,
        noDelay: true,
      },
      (req, res) => this.handle(req, res),
    )
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket))
    server.on('error', (err) => this.log.error({ err }, 'OsmAnd listener error'))
    this.server = server
    this.port = await bind(server, this.opts.port, this.opts.host)
    this.log.info({ port: this.port }, 'OsmAnd gateway listening')
  }

  /** Stops accepting; requests being answered get closeWithin's grace to finish, then every connection is cut. */
  async stop(): Promise<void> {
    const server = this.server
    if (!server?.listening) return
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeIdleConnections()
    await closeWithin(closed, () => server.closeAllConnections())
  }

  /** Whether it is bound (the service checks watch it). */
  get listening(): boolean {
    return this.server?.listening ?? false
  }

  health(): { ok: boolean; refused: number; limited: number } {
    return { ok: this.port > 0, ...this.peers.health() }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const address = req.socket.remoteAddress ?? ''
    if (this.peers.limit(address)) {
      // At most the window's length: the address's window began at its first refusal.
      const wait = WINDOW_MS / 1000
      const err = new IotError('IOT_ERR_RATE_LIMITED', [address, wait])
      return answer(res, err, { 'retry-after': String(wait), connection: 'close' })
    }
    if (req.method !== 'GET' && req.method !== 'POST') {
      this.peers.count('malformed')
      const err = new IotError('IOT_ERR_BAD_REQUEST', `OsmAnd takes GET or POST, not ${req.method}`)
      return answer(res, err, { allow: 'GET, POST', connection: 'close' })
    }
    const limit = this.opts.maxPayloadBytes
    const declared = Number(req.headers['content-length'])
    if (declared > limit) return this.tooLarge(req, res, `${declared} bytes declared`)
    const receivedAt = Date.now()
    const chunks: Buffer[] = []
    let size = 0
    this.reading.set(req.socket, res)
    req.on('data', (chunk: Buffer) => {
      if (size < 0) return
      size += chunk.length
      if (size > limit) {
        size = -1
        return this.tooLarge(req, res, `more than ${limit} bytes sent`)
      }
      chunks.push(chunk)
    })
    // A client gone before its body was in: nothing to answer, nothing taken.
    req.on('error', () => {})
    req.on('end', () => {
      this.reading.delete(req.socket)
      if (size < 0) return
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)
      this.request(req, res, body, address, receivedAt).catch((err) => {
        this.log.error({ err }, 'OsmAnd request failed')
        answer(res, new IotError('IOT_ERR_INTERNAL', [], { cause: err }))
      })
    })
  }

  /** A body over the payload limit: 413 and the connection closed, without reading the rest. */
  private tooLarge(req: IncomingMessage, res: ServerResponse, what: string): void {
    this.reading.delete(req.socket)
    this.peers.count('too_large')
    this.log.info({ address: req.socket.remoteAddress, what }, 'OsmAnd request too large')
    answer(res, new IotError('IOT_ERR_PAYLOAD_TOO_LARGE', [what, this.opts.maxPayloadBytes]), {
      connection: 'close',
    })
  }

  private async request(
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
    address: string,
    receivedAt: number,
  ): Promise<void> {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const query = q < 0 ? '' : url.slice(q + 1)
    // As Traccar reads it: a JSON content type is the JSON body; otherwise the query string's parameters, or,
    // without any, the body's (a form).
    const json = (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/json')
    let decoded: Decoded
    let raw: Buffer
    if (json) {
      decoded = decodeJson(body)
      raw = body
    } else if (query !== '') {
      decoded = decodeQuery(query)
      raw = Buffer.from(url)
    } else {
      decoded = decodeQuery(body.toString('utf8'))
      raw = body
    }
    if (!decoded.ok && decoded.imei === undefined) {
      // No device to keep it for: a body that is not JSON is bad framing; one that names no device, a refusal.
      if (decoded.reason === 'malformed_json') {
        this.peers.count('malformed')
        return answer(res, new IotError('IOT_ERR_MALFORMED_JSON', decoded.detail))
      }
      this.peers.refuse(address, 'unknown_device', '')
      return answer(res, new IotError('IOT_ERR_BAD_REQUEST', decoded.detail))
    }
    const imei = decoded.imei as string
    const device = this.credentials.byImeiLookup(imei)
    if (device === undefined) {
      this.peers.refuse(address, 'unknown_device', imei)
      const shown = imei.length > 64 ? imei.slice(0, 64) + '...' : imei
      return answer(res, new IotError('IOT_ERR_IMEI_NOT_REGISTERED', [shown, shown]))
    }
    if (!decoded.ok) {
      this.log.info(
        { deviceId: device.id, reason: decoded.reason, detail: decoded.detail },
        'OsmAnd fix refused',
      )
      quarantineRefused(this.queue, this.metrics, device.id, 'osmand', raw, decoded.reason, decoded.detail)
      return answer(res, new IotError('IOT_ERR_INVALID_READING', decoded.detail))
    }
    if (this.queue.stats().full)
      return answer(res, new IotError('IOT_ERR_QUEUE_FULL', 'the disk budget is spent'))
    const reading = Buffer.from(JSON.stringify(decoded.reading))
    try {
      await acceptDecoded(this.queue, this.metrics, device.id, 'osmand', reading, raw, receivedAt)
    } catch (err) {
      if (!(err instanceof IotError)) throw err
      if (err.code === 'IOT_ERR_INVALID_READING')
        this.log.info({ deviceId: device.id, detail: err.message }, 'OsmAnd fix refused')
      return answer(res, err)
    }
    answer(res)
  }

  /**
   * What node's HTTP parser refused, or a request past its timeouts: answered (400, 408) where a response
   * can still be written, counted and logged with the reason; a peer that reset the connection, only counted.
   */
  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    const res = this.reading.get(socket)
    this.reading.delete(socket)
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy()
      return
    }
    this.peers.count(timeout ? 'timeout' : 'malformed')
    const why = timeout
      ? `the request was not complete within ${REQUEST_TIMEOUT_MS / 1000} s`
      : `${err.code ?? 'a parse error'}: ${err.message}`
    this.log.info({ address: socket.remoteAddress, why }, 'OsmAnd request refused')
    const e = timeout
      ? new IotError('IOT_ERR_TIMEOUT', why)
      : new IotError('IOT_ERR_BAD_REQUEST', `not an HTTP/1.1 request node can read (${why})`)
    if (res !== undefined) {
      // The request's handler has its response: the answer goes there (or, already sent, the socket goes).
      if (res.headersSent) socket.destroy()
      else answer(res, e, { connection: 'close' })
      return
    }
    const { status, body } = renderError(e)
    const text = JSON.stringify(body)
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    )
  }
}

/** 200 with no body (what the apps expect), or the error as every HTTP error is rendered. */
function answer(res: ServerResponse, err?: IotError, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return
  if (err === undefined) {
    res.writeHead(200, { 'content-length': 0, ...headers })
    res.end()
    return
  }
  const r = renderError(err)
  const text = JSON.stringify(r.body)
  res.writeHead(r.status, {
    ...r.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(text)
}
