import { qs, session } from './api'

/** Events of GET /api/v1/stream (src/api/stream.ts), and `down` while the connection is being made again. */
export type StreamEvent =
  | { type: 'ready'; data: { now: number } }
  | { type: 'telemetry'; data: Array<{ id: string; lastSeenAt: string | null; latest: Record<string, any> }> }
  | { type: 'status'; data: Array<{ id: string; device: any | null }> }
  | { type: 'quarantine'; data: { added: number } }
  | { type: 'ingest'; data: { stored: number; seconds: number } }
  | { type: 'alerts'; data: unknown }
  | { type: 'resync'; data: unknown }
  | { type: 'down'; data: { reason: string } }

export interface StreamFilter {
  topics: string[]
  /** Only these devices' telemetry; absent: all. */
  devices?: string[]
}

/** Pause before connecting again after a loss. */
const RETRY_MS = 2000

/**
 * One Server-Sent Events stream, read with fetch so the admin token travels in a header (EventSource can send
 * none, and a token in the URL would land in logs and history). Reconnects after a loss; each `ready` means the
 * page should read its data again, since events may have been missed meanwhile. Returns the stop.
 */
export function openStream(
  filter: StreamFilter,
  on: (e: StreamEvent) => void,
  unauthorized: () => void,
): () => void {
  const ctl = new AbortController()
  const query = qs({ topics: filter.topics.join(','), devices: filter.devices?.join(',') })
  const run = async () => {
    while (!ctl.signal.aborted) {
      let reason = 'connection lost'
      try {
        const r = await fetch(`/api/v1/stream${query}`, {
          headers: { authorization: `Bearer ${session.token ?? ''}`, accept: 'text/event-stream' },
          signal: ctl.signal,
          cache: 'no-store',
        })
        if (r.status === 401) return unauthorized()
        if (!r.ok || !r.body) throw new Error(`stream answered ${r.status}`)
        await read(r.body, on)
      } catch (err) {
        if (ctl.signal.aborted) return
        reason = (err as Error).message
      }
      on({ type: 'down', data: { reason } })
      await new Promise((res) => setTimeout(res, RETRY_MS))
    }
  }
  void run()
  return () => ctl.abort()
}

async function read(body: ReadableStream<Uint8Array>, on: (e: StreamEvent) => void): Promise<void> {
  const reader = body.getReader()
  const text = new TextDecoder()
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buf += text.decode(value, { stream: true })
    let end = buf.indexOf('\n\n')
    while (end >= 0) {
      const block = buf.slice(0, end)
      buf = buf.slice(end + 2)
      end = buf.indexOf('\n\n')
      let type = 'message'
      let data = ''
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) type = line.slice(7)
        else if (line.startsWith('data: ')) data += line.slice(6)
      }
      if (data) on({ type, data: JSON.parse(data) } as StreamEvent)
    }
  }
}
