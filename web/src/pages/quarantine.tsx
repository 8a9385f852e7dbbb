import { useEffect, useState } from 'preact/hooks'
import { api, get, type QuarantineItem, qs } from '../api'
import { useOnReady, useStreamEvents } from '../bus'
import { base64Bytes, dateTime, hexDump } from '../format'
import { href } from '../route'
import { fleet } from '../state'
import { ErrorText } from '../ui/parts'

const PAGE = 50

export function QuarantinePage() {
  const [items, setItems] = useState<QuarantineItem[] | null>(null)
  const [next, setNext] = useState<string | null>(null)
  const [deviceId, setDeviceId] = useState('')
  const [reason, setReason] = useState('')
  const [error, setError] = useState<string>()
  const [editing, setEditing] = useState<string | null>(null)
  const [fresh, setFresh] = useState(0)

  const load = async (cursor?: string) => {
    try {
      const r = await get<{ items: QuarantineItem[]; next: string | null }>(
        `/quarantine${qs({ limit: PAGE, deviceId: deviceId.trim(), reason: reason.trim(), cursor })}`,
      )
      setItems((old) => (cursor && old ? [...old, ...r.items] : r.items))
      setNext(r.next)
      setError(undefined)
      if (!cursor) setFresh(0)
    } catch (err) {
      setError((err as Error).message)
    }
  }
  useEffect(() => {
    if (!fleet.loaded) void fleet.load().catch(() => {})
  }, [])
  useOnReady(() => void load())
  useStreamEvents((e) => {
    // New items show at once, unless a replay is being edited: then the page says how many wait.
    if (e.type === 'quarantine') {
      if (editing === null) void load()
      else setFresh((n) => n + e.data.added)
    }
  })

  return (
    <section class="panel" aria-labelledby="q-title">
      <div class="toolbar">
        <h1 id="q-title">Quarantine</h1>
        <span class="muted">
          Messages refused or found bad, with the reason; replay one as is or corrected.
        </span>
      </div>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault()
          void load()
        }}
      >
        <label>
          Device id <input value={deviceId} onInput={(e) => setDeviceId(e.currentTarget.value)} />
        </label>
        <label>
          Reason{' '}
          <input
            value={reason}
            placeholder="e.g. invalid_value"
            onInput={(e) => setReason(e.currentTarget.value)}
          />
        </label>
        <button type="submit">Filter</button>
        {fresh > 0 && (
          <button type="button" class="primary" onClick={() => void load()}>
            {fresh} new: show
          </button>
        )}
      </form>
      <ErrorText error={error} />
      {items && items.length === 0 && (
        <p class="empty">Nothing in the quarantine{deviceId || reason ? ' for this filter' : ''}.</p>
      )}
      <ul class="cards" aria-label="Quarantined messages">
        {items?.map((q) => (
          <QuarantineCard
            key={q.id}
            item={q}
            editing={editing === q.id}
            edit={(on) => setEditing(on ? q.id : null)}
            replayed={() => void load()}
          />
        ))}
      </ul>
      {next && (
        <button type="button" onClick={() => void load(next)}>
          Load more
        </button>
      )}
    </section>
  )
}

function payloadText(q: QuarantineItem): string | undefined {
  if (q.payloadEncoding !== 'utf8') return undefined
  try {
    return JSON.stringify(JSON.parse(q.payload), null, 2)
  } catch {
    return q.payload
  }
}

function QuarantineCard(props: {
  item: QuarantineItem
  editing: boolean
  edit: (on: boolean) => void
  replayed: () => void
}) {
  const q = props.item
  const text = payloadText(q)
  const [view, setView] = useState<'text' | 'hex'>(text === undefined ? 'hex' : 'text')
  const [body, setBody] = useState(text ?? '')
  const [result, setResult] = useState<string>()
  const [error, setError] = useState<string>()
  const bytes = q.payloadEncoding === 'base64' ? base64Bytes(q.payload) : new TextEncoder().encode(q.payload)
  const name = q.deviceId ? (fleet.devices.get(q.deviceId)?.name ?? q.deviceId) : 'unknown device'

  const replay = async (edited: boolean) => {
    setError(undefined)
    let payload: unknown
    if (edited) {
      try {
        payload = JSON.parse(body)
      } catch (err) {
        setError(`The body is not JSON: ${(err as Error).message}`)
        return
      }
    }
    try {
      const r = await api<{ accepted: number; quarantined?: number }>(
        'POST',
        `/quarantine/${q.id}/replay`,
        edited ? { body: payload } : {},
      )
      setResult(
        `Replayed: ${r.accepted} accepted${r.quarantined ? `, ${r.quarantined} quarantined again` : ''}.`,
      )
      props.edit(false)
      props.replayed()
    } catch (err) {
      setError((err as Error).message)
    }
  }

  return (
    <li class="card qcard" data-quarantine={q.id}>
      <div class="row wrap">
        <span class="pill bad">{q.reason}</span>
        {q.deviceId ? <a href={href('devices', q.deviceId)}>{name}</a> : <span>{name}</span>}
        <span class="muted">
          {q.transport}
          {q.topic ? ` · ${q.topic}` : ''} · {dateTime(q.receivedAt)} ·{' '}
          {q.acked ? 'acknowledged, then found bad' : 'refused'}
        </span>
        {q.replayedAt && <span class="pill muted">replayed {dateTime(q.replayedAt)}</span>}
      </div>
      <p class="detail-text">{q.detail}</p>
      <fieldset class="tabs small">
        <legend class="sr-only">Payload view</legend>
        <button
          type="button"
          aria-pressed={view === 'text'}
          disabled={text === undefined}
          onClick={() => setView('text')}
        >
          Text
        </button>
        <button type="button" aria-pressed={view === 'hex'} onClick={() => setView('hex')}>
          Hex
        </button>
        <span class="muted">{bytes.length} bytes</span>
      </fieldset>
      <pre class="payload" data-testid="payload">
        {view === 'text' ? text : hexDump(bytes)}
      </pre>
      {result && (
        <p class="ok-text" role="status">
          {result}
        </p>
      )}
      <ErrorText error={error} />
      {!q.replayedAt && q.deviceId && !props.editing && (
        <button type="button" onClick={() => props.edit(true)}>
          Replay…
        </button>
      )}
      {props.editing && (
        <div class="replay">
          <label for={`body-${q.id}`}>Body to replay (JSON: a reading or an array of readings)</label>
          <textarea
            id={`body-${q.id}`}
            rows={8}
            class="mono"
            value={body}
            onInput={(e) => setBody(e.currentTarget.value)}
          />
          <div class="row">
            <button type="button" class="primary" onClick={() => replay(body !== (text ?? ''))}>
              {body !== (text ?? '') ? 'Replay edited body' : 'Replay as received'}
            </button>
            <button type="button" onClick={() => props.edit(false)}>
              Cancel
            </button>
          </div>
        </div>
      )}
    </li>
  )
}
