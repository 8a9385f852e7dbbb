import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { waitFor } from './index.js'

/** What a webhook receiver got and accepted: the event, and its Iotcore-Event-Id header. */
export interface Received {
  headerId: string
  event: { id: string; type: string; createdAt: string; data: Record<string, any> }
}

/**
 * A webhook receiver as a user would write one, on node:http: it checks `Iotcore-Signature` against its
 * secret (any v1 may match, one per secret during a rotation; the timestamp within 5 minutes) on the raw
 * body, answers 400 to a bad signature and 200 to a good one, and keeps what it accepted.
 */
export class Receiver {
  readonly received: Received[] = []
  /** Requests refused for their signature. */
  refused = 0
  /** Statuses to answer the next requests with instead of accepting them (a receiver failing for a while). */
  readonly failWith: number[] = []
  private server: Server | undefined

  constructor(private readonly secret: string) {}

  /** Listens on `port` (0: a free one); returns the URL to register. */
  async listen(port = 0): Promise<string> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        const failing = this.failWith.shift()
        if (failing !== undefined) {
          res.writeHead(failing).end()
          return
        }
        if (!verify(String(req.headers['iotcore-signature'] ?? ''), body, this.secret)) {
          this.refused++
          res.writeHead(400).end('bad signature')
          return
        }
        this.received.push({ headerId: String(req.headers['iotcore-event-id']), event: JSON.parse(body) })
        res.writeHead(200).end('ok')
      })
    })
    this.server = server
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(server.address() as { port: number }).port}/hooks/iotcore`
  }

  async close(): Promise<void> {
    const s = this.server
    this.server = undefined
    if (!s) return
    s.closeAllConnections()
    await new Promise((r) => s.close(r))
  }

  /** Waits until it has accepted `n` events. */
  async waitForCount(n: number, ms = 60_000): Promise<Received[]> {
    await waitFor(() => this.received.length >= n, ms, `${n} webhook events (got ${this.received.length})`)
    return this.received
  }
}

/** The receiver's check, as the README shows it. */
export function verify(header: string, body: string, secret: string, toleranceSeconds = 300): boolean {
  const parts = header.split(',').map((p) => p.split('='))
  const t = Number(parts.find(([k]) => k === 't')?.[1])
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceSeconds) return false
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest()
  return parts
    .filter(([k]) => k === 'v1')
    .some(([, v]) => {
      const got = Buffer.from(v ?? '', 'hex')
      return got.length === expected.length && timingSafeEqual(got, expected)
    })
}

/** One Server-Sent Event. */
export interface Sse {
  id?: string
  event?: string
  data: any
}

/** A client of an SSE stream on fetch: it parses the events as they come and keeps them. */
export class SseClient {
  readonly events: Sse[] = []
  /** True once the server's first bytes (the retry line) arrived: the stream is attached. */
  open = false
  private readonly abort = new AbortController()
  private reading: Promise<void> | undefined

  async connect(url: string, token: string, lastEventId?: string): Promise<void> {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'text/event-stream' }
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
    const res = await fetch(url, { headers, signal: this.abort.signal })
    if (res.status !== 200) throw new Error(`stream answered ${res.status}: ${await res.text()}`)
    const reader = res.body!.getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    this.reading = (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read()
          if (done) return
          this.open = true
          buffer += decoder.decode(value, { stream: true })
          let end = buffer.indexOf('\n\n')
          while (end >= 0) {
            this.parse(buffer.slice(0, end))
            buffer = buffer.slice(end + 2)
            end = buffer.indexOf('\n\n')
          }
        }
      } catch {
        // aborted by close()
      }
    })()
    await waitFor(() => this.open, 20_000, 'the stream to open')
  }

  private parse(block: string): void {
    const e: Partial<Sse> = {}
    let data: string | undefined
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue
      const i = line.indexOf(':')
      const field = i < 0 ? line : line.slice(0, i)
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '')
      if (field === 'id') e.id = value
      else if (field === 'event') e.event = value
      else if (field === 'data') data = data === undefined ? value : `${data}\n${value}`
    }
    if (data !== undefined) this.events.push({ ...e, data: JSON.parse(data) })
  }

  async close(): Promise<void> {
    this.abort.abort()
    await this.reading
  }
}
