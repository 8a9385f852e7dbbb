/** A Server-Sent Events reader for tests of GET /api/v1/stream: fetch with the admin token in a header. */
import { ADMIN_TOKEN, waitFor } from './index.js'

export interface SseEvent {
  type: string
  data: any
}

export interface Sse {
  status: number
  events: SseEvent[]
  /** Resolves true once the server ended the stream (false if it was closed here). */
  ended: Promise<boolean>
  /** The first event of `type` (after `from`, an index into events) that `match` accepts. */
  next(type: string, match?: (data: any) => boolean, from?: number): Promise<SseEvent>
  close(): void
}

export async function openSse(url: string, token = ADMIN_TOKEN): Promise<Sse> {
  const ctl = new AbortController()
  const r = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: ctl.signal })
  const events: SseEvent[] = []
  let ended: Promise<boolean> = Promise.resolve(true)
  if (r.ok && r.body) {
    const reader = r.body.getReader()
    const text = new TextDecoder()
    ended = (async () => {
      let buf = ''
      try {
        for (;;) {
          const { value, done } = await reader.read()
          if (done) return true
          buf += text.decode(value, { stream: true })
          for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
            const block = buf.slice(0, end)
            buf = buf.slice(end + 2)
            let type = 'message'
            let data = ''
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7)
              else if (line.startsWith('data: ')) data += line.slice(6)
            }
            if (data) events.push({ type, data: JSON.parse(data) })
          }
        }
      } catch {
        // aborted by close(), or the connection reset
        return !ctl.signal.aborted
      }
    })()
  }
  return {
    status: r.status,
    events,
    ended,
    next: (type, match = () => true, from = 0) =>
      waitFor(
        () => events.slice(from).find((e) => e.type === type && match(e.data)),
        20_000,
        `a ${type} event`,
      ),
    close: () => ctl.abort(),
  }
}
