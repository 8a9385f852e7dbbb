import L from 'leaflet'
import 'leaflet/dist/leaflet.css'
import { useEffect, useRef, useState } from 'preact/hooks'
import Supercluster from 'supercluster'
import { feature, mesh } from 'topojson-client'
import type { GeometryCollection, Topology } from 'topojson-specification'
import countries from 'world-atlas/countries-110m.json'
import { qs, session } from '../api'
import { useOnReady, useStreamEvents } from '../bus'
import { ago, dateTime } from '../format'
import { href } from '../route'
import { fleet, positionOf, server, statusOf, useFleet } from '../state'
import { DevicePicker } from '../ui/device-picker'
import { cssVar, ErrorText } from '../ui/parts'

/** Track presets; the track is read raw, a page of points at a time, up to MAX_TRACK. */
const TRACKS = { '1h': 3_600_000, '6h': 21_600_000, '24h': 86_400_000, '7d': 604_800_000 }
type TrackRange = keyof typeof TRACKS
const TRACK_PAGE = 10_000
const MAX_TRACK = 50_000
/** Clusters are drawn again at most this often while the fleet moves. */
const REDRAW_MS = 1000

/**
 * Natural Earth's rings are spherical: an edge across the antimeridian (Chukotka, Fiji) joins 179° to -179°
 * the short way round, which a flat map draws across the whole world. Each ring's longitudes are unwrapped
 * (each within 180° of the one before, so the ring runs on past 180°), and a ring around a pole (Antarctica)
 * is closed along that pole.
 */
function unwrap(geo: GeoJSON.Feature | GeoJSON.FeatureCollection): void {
  const ring = (r: number[][]) => {
    for (let i = 1; i < r.length; i++) {
      const d = r[i][0] - r[i - 1][0]
      if (d > 180) r[i][0] -= 360 * Math.round(d / 360)
      else if (d < -180) r[i][0] += 360 * Math.round(-d / 360)
    }
    const span = r[r.length - 1][0] - r[0][0]
    if (Math.abs(span) >= 180) {
      const pole = r[0][1] < 0 ? -90 : 90
      r.push([r[r.length - 1][0], pole], [r[0][0], pole], r[0])
    }
  }
  const geometry = (g: GeoJSON.Geometry) => {
    if (g.type === 'Polygon') g.coordinates.forEach(ring)
    else if (g.type === 'MultiPolygon') for (const p of g.coordinates) p.forEach(ring)
  }
  if (geo.type === 'FeatureCollection') for (const f of geo.features) geometry(f.geometry)
  else geometry(geo.geometry)
}

/**
 * The world outline from Natural Earth (world-atlas, bundled): land and country borders, drawn under
 * everything, so the map means something with no tile server and no network.
 */
function outline(): L.Layer {
  const topo = countries as unknown as Topology<{ land: GeometryCollection; countries: GeometryCollection }>
  const landGeo = feature(topo, topo.objects.land) as GeoJSON.Feature | GeoJSON.FeatureCollection
  unwrap(landGeo)
  const land = L.geoJSON(landGeo as any, {
    style: { color: cssVar('--map-coast'), weight: 1, fillColor: cssVar('--map-land'), fillOpacity: 1 },
    interactive: false,
  })
  const borders = L.geoJSON(mesh(topo, topo.objects.countries, (a, b) => a !== b) as any, {
    style: { color: cssVar('--map-border'), weight: 0.6 },
    interactive: false,
  })
  return L.layerGroup([land, borders])
}

export function MapPage({ id }: { id?: string }) {
  const version = useFleet()
  const box = useRef<HTMLElement>(null)
  const map = useRef<L.Map | null>(null)
  const clusters = useRef<L.LayerGroup | null>(null)
  const index = useRef<Supercluster | null>(null)
  const lastDraw = useRef(0)
  const fitted = useRef(false)
  const [count, setCount] = useState(0)
  // The track panel's effects run before this page's (children first): it waits for the map as state.
  const [ready, setReady] = useState<L.Map | null>(null)
  const [error, setError] = useState<string>()

  useOnReady(() =>
    fleet.load().catch((err) => setError(`Could not read the fleet: ${(err as Error).message}`)),
  )

  useEffect(() => {
    // Markers are SVG (a few hundred at most, clustered): each is an element, focusable and testable.
    const m = L.map(box.current!, { worldCopyJump: true, minZoom: 2 })
    m.attributionControl.addAttribution('Outline: Natural Earth')
    m.setView([20, 0], 2)
    const tiles = server.info?.map.tiles
    if (tiles) L.tileLayer(tiles, { attribution: server.info?.map.attribution ?? '', maxZoom: 19 }).addTo(m)
    else outline().addTo(m)
    clusters.current = L.layerGroup().addTo(m)
    map.current = m
    setReady(m)
    m.on('moveend', () => draw())
    return () => {
      m.remove()
      map.current = null
    }
  }, [])

  /** Clusters for the current view from the index: a few hundred markers whatever the fleet's size. */
  const draw = () => {
    const m = map.current
    const idx = index.current
    const layer = clusters.current
    if (!m || !idx || !layer) return
    lastDraw.current = Date.now()
    const b = m.getBounds()
    const zoom = Math.round(m.getZoom())
    layer.clearLayers()
    for (const c of idx.getClusters([b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], zoom)) {
      const [lon, lat] = c.geometry.coordinates
      const p = c.properties as any
      if (p.cluster) {
        const n = p.point_count as number
        const size = n < 100 ? 32 : n < 1000 ? 40 : 48
        L.marker([lat, lon], {
          icon: L.divIcon({
            className: 'cluster',
            html: `<span>${p.point_count_abbreviated}</span>`,
            iconSize: [size, size],
          }),
          keyboard: true,
          title: `${n} devices`,
          alt: `${n} devices`,
        })
          .on('click', () => m.setView([lat, lon], Math.min(idx.getClusterExpansionZoom(p.cluster_id), 18)))
          .addTo(layer)
      } else {
        const d = fleet.devices.get(p.id)
        if (!d) continue
        const s = statusOf(d)
        L.circleMarker([lat, lon], {
          radius: 7,
          weight: 2,
          color: '#fff',
          fillColor: cssVar(`--${s}`),
          fillOpacity: 1,
          className: `device-marker device-${d.id}`,
        })
          .bindTooltip(d.name)
          .bindPopup(
            `<strong>${escapeHtml(d.name)}</strong><br>${s}, seen ${ago(d.lastSeenAt, server.now())}<br>` +
              `<a href="${href('devices', d.id)}">details</a> · <a href="${href('charts', d.id)}">charts</a> · ` +
              `<a href="${href('map', d.id)}">track</a>`,
          )
          .addTo(layer)
      }
    }
  }

  // The index is built again as the fleet changes (10,000 points take milliseconds), drawn at most once a second.
  useEffect(() => {
    const points: Array<GeoJSON.Feature<GeoJSON.Point, { id: string }>> = []
    for (const d of fleet.devices.values()) {
      const p = positionOf(d)
      if (p)
        points.push({
          type: 'Feature',
          geometry: { type: 'Point', coordinates: [p[1], p[0]] },
          properties: { id: d.id },
        })
    }
    const idx = new Supercluster({ radius: 50, maxZoom: 16 })
    idx.load(points)
    index.current = idx
    setCount(points.length)
    const m = map.current
    if (m && !fitted.current && points.length > 0 && !id && fleet.loaded) {
      fitted.current = true
      const bounds = L.latLngBounds(points.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]))
      m.fitBounds(bounds.pad(0.2), { maxZoom: 12 })
    }
    const wait = REDRAW_MS - (Date.now() - lastDraw.current)
    if (wait <= 0) draw()
    else {
      const t = setTimeout(draw, wait)
      return () => clearTimeout(t)
    }
  }, [version])

  return (
    <div class="split map-split has-detail">
      <section class="panel map-panel" aria-labelledby="map-title">
        <div class="toolbar">
          <h1 id="map-title">Map</h1>
          <span class="muted" aria-live="polite" data-testid="map-count">
            {count.toLocaleString()} devices with a position
          </span>
        </div>
        <ErrorText error={error} />
        <section ref={box} class="map" aria-label="Map of device positions" />
      </section>
      <TrackPanel id={id} map={ready} />
    </div>
  )
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** A device's track over a range: its positions in order, kept growing live when the range ends now. */
function TrackPanel({ id, map }: { id?: string; map: L.Map | null }) {
  const [range, setRange] = useState<TrackRange>('24h')
  const [track, setTrack] = useState<{ points: number; from: number; partial: boolean } | 'loading' | null>(
    null,
  )
  const [error, setError] = useState<string>()
  const line = useRef<L.Polyline | null>(null)
  const head = useRef<L.CircleMarker | null>(null)
  const lastTs = useRef(0)

  useEffect(() => {
    const m = map
    if (!id || !m) return
    let cancelled = false
    const to = server.now() + 1
    const from = to - TRACKS[range]
    ;(async () => {
      setTrack('loading')
      const lat: Array<{ ts: number; value: unknown }> = []
      const lon: Array<{ ts: number; value: unknown }> = []
      let cursor: string | undefined
      try {
        do {
          const r = await fetchTrackPage(id, from, to, cursor)
          lat.push(...r.body.lat)
          lon.push(...r.body.lon)
          cursor = r.next ?? undefined
        } while (cursor && lat.length < MAX_TRACK && !cancelled)
      } catch (err) {
        if (!cancelled) setError((err as Error).message)
        return
      }
      if (cancelled) return
      const lons = new Map(lon.map((p) => [p.ts, p.value]))
      const pts: L.LatLngExpression[] = []
      for (const p of lat) {
        const o = lons.get(p.ts)
        if (typeof p.value === 'number' && typeof o === 'number') pts.push([p.value, o])
      }
      lastTs.current = lat.length ? lat[lat.length - 1].ts : 0
      line.current?.remove()
      head.current?.remove()
      line.current = L.polyline(pts, { color: cssVar('--accent'), weight: 3, className: 'track' }).addTo(m)
      if (pts.length) {
        head.current = L.circleMarker(pts[pts.length - 1], {
          radius: 8,
          color: '#fff',
          weight: 2,
          fillColor: cssVar('--accent'),
          fillOpacity: 1,
        }).addTo(m)
        m.fitBounds(line.current.getBounds().pad(0.3), { maxZoom: 15 })
      }
      setError(undefined)
      setTrack({ points: pts.length, from, partial: cursor !== undefined })
    })()
    return () => {
      cancelled = true
      line.current?.remove()
      head.current?.remove()
      line.current = null
      head.current = null
    }
  }, [id, range, map])

  // The track follows the device as its positions are stored.
  useStreamEvents((e) => {
    if (e.type !== 'telemetry' || !id || !line.current) return
    for (const u of e.data) {
      if (u.id !== id) continue
      const lat = u.latest.lat
      const lon = u.latest.lon
      if (!lat || !lon || lat.ts !== lon.ts || lat.ts <= lastTs.current) continue
      lastTs.current = lat.ts
      line.current.addLatLng([lat.value, lon.value])
      if (head.current) head.current.setLatLng([lat.value, lon.value])
      else
        head.current = L.circleMarker([lat.value, lon.value], {
          radius: 8,
          color: '#fff',
          weight: 2,
          fillColor: cssVar('--accent'),
          fillOpacity: 1,
        }).addTo(map!)
      setTrack((t) => (t && t !== 'loading' ? { ...t, points: t.points + 1 } : t))
    }
  })

  return (
    <aside class="panel detail track" aria-labelledby="track-title">
      <h2 id="track-title">Track</h2>
      <DevicePicker value={id} choose={(d) => (location.hash = href('map', d))} />
      {id && (
        <>
          <fieldset class="tabs">
            <legend class="sr-only">Track range</legend>
            {(Object.keys(TRACKS) as TrackRange[]).map((r) => (
              <button key={r} type="button" aria-pressed={r === range} onClick={() => setRange(r)}>
                {r}
              </button>
            ))}
          </fieldset>
          <p class="muted" aria-live="polite" data-testid="track-info">
            {track === 'loading'
              ? 'loading…'
              : track && track.points > 0
                ? `${track.points.toLocaleString()} positions since ${dateTime(track.from)}${track.partial ? ' (the first ones only)' : ''}`
                : track && `No positions in the last ${range}.`}
          </p>
          <ErrorText error={error} />
          <a class="small" href={href('map')}>
            Clear track
          </a>
        </>
      )}
    </aside>
  )
}

async function fetchTrackPage(id: string, from: number, to: number, cursor?: string) {
  const r = await fetch(
    `/api/v1/devices/${encodeURIComponent(id)}/telemetry${qs({ keys: 'lat,lon', from, to, order: 'asc', limit: TRACK_PAGE, cursor })}`,
    { headers: { authorization: `Bearer ${session.token ?? ''}` } },
  )
  if (!r.ok)
    throw new Error(`track: ${r.status} ${((await r.json().catch(() => ({}))) as any).message ?? ''}`)
  return {
    body: (await r.json()) as {
      lat: Array<{ ts: number; value: unknown }>
      lon: Array<{ ts: number; value: unknown }>
    },
    next: r.headers.get('iotcore-next-cursor'),
  }
}
