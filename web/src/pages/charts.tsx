import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { get, qs, type Series } from '../api'
import { useStreamEvents } from '../bus'
import { dateTime, toLocalInput } from '../format'
import { href } from '../route'
import { server, useDevice } from '../state'
import { TimeChart } from '../ui/chart'
import { DevicePicker } from '../ui/device-picker'
import { ErrorText } from '../ui/parts'

export const RANGES = {
  '15m': 900_000,
  '1h': 3_600_000,
  '6h': 21_600_000,
  '24h': 86_400_000,
  '7d': 604_800_000,
  '30d': 2_592_000_000,
}
export type RangeName = keyof typeof RANGES | 'custom'
/** Position keys are better on the map than on a chart: chosen last. */
const POSITION = new Set(['lat', 'lon', 'alt', 'heading', 'sats'])
const MAX_KEYS = 8

function intervalText(ms: number): string {
  if (ms < 1000) return `${ms} ms`
  if (ms < 60_000) return `${ms / 1000} s`
  if (ms < 3_600_000) return `${ms / 60_000} min`
  if (ms < 86_400_000) return `${ms / 3_600_000} h`
  return `${ms / 86_400_000} d`
}

/** The range shown: a preset ending now (live), or fixed bounds; a drag-zoom narrows either. */
interface View {
  from: number
  to: number
  live: boolean
}

export function ChartsPage({ id, range }: { id?: string; range?: string }) {
  const device = useDevice(id)
  const numericKeys = useMemo(
    () =>
      device
        ? Object.keys(device.latest)
            .filter((k) => typeof device.latest[k].value === 'number')
            .sort((a, b) => Number(POSITION.has(a)) - Number(POSITION.has(b)) || a.localeCompare(b))
        : [],
    [device],
  )
  return (
    <section class="panel" aria-labelledby="charts-title">
      <div class="toolbar">
        <h1 id="charts-title">Charts</h1>
        <DevicePicker value={id} choose={(d) => (location.hash = href('charts', d))} />
        {device && (
          <a class="small" href={href('devices', device.id)}>
            device details
          </a>
        )}
      </div>
      {id && device === null && <p class="empty">No live device {id}.</p>}
      {device && numericKeys.length === 0 && <p class="empty">{device.name} has sent no numbers yet.</p>}
      {device && numericKeys.length > 0 && (
        <DeviceCharts
          key={device.id}
          id={device.id}
          keys={numericKeys}
          range={range && (range in RANGES || range === 'custom') ? (range as RangeName) : '1h'}
        />
      )}
    </section>
  )
}

/** A device's charts; the preset range is in the URL (#/charts/<id>/7d), so a view can be shared. */
function DeviceCharts({ id, keys, range }: { id: string; keys: string[]; range: RangeName }) {
  const [chosen, setChosen] = useState<string[]>(() => {
    const plain = keys.filter((k) => !POSITION.has(k))
    return (plain.length ? plain : keys).slice(0, 3)
  })
  const setRange = (r: RangeName) => (location.hash = href('charts', id, r))
  const [custom, setCustom] = useState(() => ({ from: server.now() - 86_400_000, to: server.now() }))
  const [zoom, setZoom] = useState<{ from: number; to: number } | null>(null)
  const [series, setSeries] = useState<Series | null>(null)
  const [view, setView] = useState<View | null>(null)
  const [error, setError] = useState<string>()
  const [loading, setLoading] = useState(false)
  const request = useRef(0)

  const load = async () => {
    const n = ++request.current
    const now = server.now()
    const base: View =
      range === 'custom' ? { ...custom, live: false } : { from: now - RANGES[range], to: now, live: true }
    const v: View = zoom ? { ...zoom, live: false } : base
    setLoading(true)
    try {
      // About one bucket per pixel of a wide chart: the server picks the round interval.
      const points = Math.max(200, Math.min(2000, Math.round(window.innerWidth)))
      const url = `/devices/${encodeURIComponent(id)}/series${qs({ keys: chosen.join(','), from: v.from, to: v.to + (v.live ? 1 : 0), points })}`
      // A sample (one index probe per bucket) draws at once, however many readings the range holds; the
      // aggregate (a scan of them all) replaces it when it comes.
      let exact = false
      get<Series>(`${url}&sample=true`).then(
        (s) => {
          if (n !== request.current || exact) return
          setSeries(s)
          setView(v)
        },
        () => {},
      )
      const s = await get<Series>(url)
      exact = true
      if (n !== request.current) return
      setSeries(s)
      setView(v)
      setError(undefined)
    } catch (err) {
      if (n === request.current) setError((err as Error).message)
    } finally {
      if (n === request.current) setLoading(false)
    }
  }

  useEffect(() => {
    if (chosen.length > 0) void load()
  }, [chosen.join(','), range, custom.from, custom.to, zoom?.from, zoom?.to])

  useStreamEvents((e) => {
    // Values stored while the stream was away: read the range again.
    if (e.type === 'resync' && series) void load()
    if (e.type !== 'telemetry' || !series || !view?.live) return
    // A live range grows with what was stored: the newest value of each chosen key, as one more point.
    for (const u of e.data) {
      if (u.id !== id) continue
      const newest = Math.max(...chosen.map((k) => u.latest[k]?.ts ?? 0))
      const last = series.ts[series.ts.length - 1] ?? 0
      if (newest <= last || newest < view.from) continue
      const next: Series = { ...series, ts: [...series.ts, newest], keys: {} }
      for (const k of chosen) {
        const p = u.latest[k]
        const v = p && p.ts === newest && typeof p.value === 'number' ? p.value : null
        const col = series.keys[k] ?? { avg: [], min: [], max: [] }
        next.keys[k] = { avg: [...col.avg, v], min: [...col.min, v], max: [...col.max, v] }
      }
      setSeries(next)
      setView({ ...view, to: Math.max(view.to, newest + 1) })
    }
  })

  return (
    <div class="charts">
      <div class="toolbar wrap">
        <fieldset class="tabs">
          <legend class="sr-only">Time range</legend>
          {(Object.keys(RANGES) as RangeName[]).concat('custom').map((r) => (
            <button
              key={r}
              type="button"
              aria-pressed={range === r}
              onClick={() => {
                setZoom(null)
                setRange(r)
              }}
            >
              {r === 'custom' ? 'Custom' : `Last ${r}`}
            </button>
          ))}
        </fieldset>
        {range === 'custom' && (
          <div class="row">
            <label>
              From{' '}
              <input
                type="datetime-local"
                value={toLocalInput(custom.from)}
                onChange={(e) => setCustom({ ...custom, from: new Date(e.currentTarget.value).getTime() })}
              />
            </label>
            <label>
              To{' '}
              <input
                type="datetime-local"
                value={toLocalInput(custom.to)}
                onChange={(e) => setCustom({ ...custom, to: new Date(e.currentTarget.value).getTime() })}
              />
            </label>
          </div>
        )}
        {zoom && (
          <button type="button" onClick={() => setZoom(null)}>
            Reset zoom
          </button>
        )}
      </div>
      <fieldset class="keys">
        <legend>Keys</legend>
        {keys.map((k) => (
          <label key={k} class="check">
            <input
              type="checkbox"
              checked={chosen.includes(k)}
              disabled={!chosen.includes(k) && chosen.length >= MAX_KEYS}
              onChange={(e) =>
                setChosen(e.currentTarget.checked ? [...chosen, k] : chosen.filter((x) => x !== k))
              }
            />{' '}
            {k}
          </label>
        ))}
      </fieldset>
      <p class="muted" aria-live="polite" data-testid="chart-status">
        {error
          ? ''
          : series && view
            ? series.sampled
              ? `${dateTime(view.from)} – ${dateTime(view.to)} · a first look: each ${intervalText(series.intervalMs)}'s first reading; averages loading…`
              : `${dateTime(view.from)} – ${dateTime(view.to)} · ${series.ts.length.toLocaleString()} points, one per ${intervalText(series.intervalMs)}${view.live ? ' · live' : ''}${loading ? ' · loading…' : ''} · drag across a chart to zoom in`
            : 'loading…'}
      </p>
      <ErrorText error={error} />
      {series &&
        view &&
        chosen.map((k) => (
          <figure key={k} class="chart-box" data-key={k}>
            <figcaption>{k}</figcaption>
            <TimeChart
              label={k}
              sync={`device-${id}`}
              data={{
                ts: series.ts,
                avg: series.keys[k]?.avg ?? [],
                min: series.keys[k]?.min ?? [],
                max: series.keys[k]?.max ?? [],
              }}
              range={view}
              sampled={series.sampled}
              zoom={(from, to) => setZoom({ from, to })}
            />
          </figure>
        ))}
    </div>
  )
}
