import { useEffect, useRef, useState } from 'preact/hooks'
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import { get, type Readiness, readiness } from '../api'
import { useStreamEvents } from '../bus'
import { ago, dateTime } from '../format'
import { server } from '../state'
import { cssVar, ErrorText, HealthPill, TableHead } from '../ui/parts'

/** /readyz is read this often while the page is shown. */
const POLL_MS = 2000
/** Seconds of ingest rate kept for the sparkline. */
const HISTORY = 300

interface Service {
  id: string
  roles: string[]
  host: string
  pid: number
  startedAt: string
  beatAt: string
  stoppedAt: string | null
}

function fmt(v: unknown): string {
  if (typeof v === 'number') return v.toLocaleString(undefined, { maximumFractionDigits: 2 })
  if (typeof v === 'boolean') return v ? 'yes' : 'no'
  // A nested detail (the failing checks by name): its entries, or "none" when it holds nothing.
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v)
    return entries.length === 0 ? 'none' : entries.map(([k, x]) => `${k} (${fmt(x)})`).join(', ')
  }
  return String(v)
}

export function OperationsPage() {
  const [ready, setReady] = useState<Readiness | null>(null)
  const [error, setError] = useState<string>()
  const [services, setServices] = useState<Service[]>([])
  const [rate, setRate] = useState<number | null>(null)
  const history = useRef<{ ts: number[]; rate: number[] }>({ ts: [], rate: [] })
  const chartBox = useRef<HTMLDivElement>(null)
  const chart = useRef<uPlot | null>(null)

  useEffect(() => {
    let stop = false
    const read = async () => {
      try {
        const r = await readiness()
        if (!stop) {
          setReady(r)
          setError(undefined)
        }
      } catch (err) {
        if (!stop) setError(`/readyz did not answer: ${(err as Error).message}`)
      }
      get<{ services: Service[] }>('/services').then(
        (s) => !stop && setServices(s.services.filter((x) => !x.stoppedAt)),
        () => {},
      )
    }
    void read()
    const t = setInterval(read, POLL_MS)
    return () => {
      stop = true
      clearInterval(t)
    }
  }, [])

  useEffect(() => {
    const el = chartBox.current!
    chart.current = new uPlot(
      {
        width: el.clientWidth || 600,
        height: 140,
        ms: 1,
        legend: { show: false },
        cursor: { show: false },
        axes: [
          { stroke: '#888', grid: { show: false } },
          { stroke: '#888', size: 60 },
        ],
        series: [
          {},
          {
            stroke: cssVar('--accent'),
            width: 1.5,
            fill: 'rgba(80,140,255,0.12)',
          },
        ],
      },
      [[], []],
      el,
    )
    const ro = new ResizeObserver(() => chart.current?.setSize({ width: el.clientWidth, height: 140 }))
    ro.observe(el)
    return () => {
      ro.disconnect()
      chart.current?.destroy()
    }
  }, [])

  // The stream sends the readings stored each second, by every ingest process.
  useStreamEvents((e) => {
    if (e.type !== 'ingest') return
    const r = e.data.stored / e.data.seconds
    const h = history.current
    h.ts.push(server.now())
    h.rate.push(r)
    if (h.ts.length > HISTORY) {
      h.ts.shift()
      h.rate.shift()
    }
    setRate(r)
    chart.current?.setData([h.ts, h.rate])
  })

  const components = ready ? Object.entries(ready.components) : []
  const queue = ready?.components.queue
  return (
    <section class="panel ops" aria-labelledby="ops-title">
      <div class="toolbar">
        <h1 id="ops-title">Operations</h1>
        {ready && (
          <span
            class={`pill ${ready.status === 'ready' ? 'ok' : 'bad'}`}
            role="status"
            data-testid="ready-status"
          >
            {ready.status}
          </span>
        )}
        <span class="muted">
          <a href="/docs">REST API (/docs)</a> · <a href="/metrics">/metrics</a> ·{' '}
          <a href="/readyz">/readyz</a>
        </span>
      </div>
      <ErrorText error={error} />
      <div class="stats">
        <div class="stat">
          <span class="muted">ingest rate</span>
          <strong data-testid="ingest-rate">{rate === null ? '…' : `${fmt(Math.round(rate))}/s`}</strong>
        </div>
        <div class="stat">
          <span class="muted">queue depth</span>
          <strong data-testid="queue-depth">{queue ? fmt(queue.depth) : '…'}</strong>
        </div>
        <div class="stat">
          <span class="muted">oldest queued</span>
          <strong>{queue ? `${fmt(queue.oldestAgeSeconds)} s` : '…'}</strong>
        </div>
        <div class="stat">
          <span class="muted">queue disk</span>
          <strong>
            {queue && typeof queue.bytes === 'number' && typeof queue.maxBytes === 'number'
              ? `${((100 * queue.bytes) / queue.maxBytes).toFixed(1)}%`
              : '…'}
          </strong>
        </div>
      </div>
      <figure class="chart-box">
        <figcaption>Readings stored per second (all ingest processes, live)</figcaption>
        <div ref={chartBox} class="chart" role="img" aria-label="Ingest rate over the last minutes" />
      </figure>
      <h2>Components</h2>
      <div class="table-wrap">
        <table data-testid="components">
          <TableHead cols={['component', 'state', 'details']} />
          <tbody>
            {components.map(([name, h]) => (
              <tr key={name}>
                <th scope="row">{name}</th>
                <td>
                  <HealthPill ok={h.ok} />
                </td>
                <td class="small">
                  {Object.entries(h)
                    .filter(([k]) => k !== 'ok')
                    .map(([k, v]) => `${k}: ${fmt(v)}`)
                    .join(' · ')}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Processes</h2>
      <div class="table-wrap">
        <table>
          <TableHead cols={['process', 'roles', 'started', 'last heartbeat']} />
          <tbody>
            {services.map((s) => (
              <tr key={s.id}>
                <td class="mono">
                  {s.host}:{s.pid}
                </td>
                <td>{s.roles.join(', ')}</td>
                <td>{dateTime(s.startedAt)}</td>
                <td>{ago(s.beatAt, server.now())}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  )
}
