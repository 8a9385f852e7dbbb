import { type ComponentType, render } from 'preact'
import { useEffect, useMemo, useState } from 'preact/hooks'
import { ApiError, api, type ConsoleInfo, type Readiness, readiness, session, whenUnauthorized } from './api'
import { publish, streamOpening } from './bus'
import { AlertsPage } from './pages/alerts'
import { DevicesPage } from './pages/devices'
import { QuarantinePage } from './pages/quarantine'
import { href, PAGES, type Page, parseRoute, type Route, useRoute } from './route'
import { fleet, server } from './state'
import { openStream, type StreamFilter } from './stream'
import './styles.css'
import { ErrorText, HealthPill, TableHead } from './ui/parts'

/**
 * A page loaded when first shown: the map (Leaflet, the world outline) and the charts (uPlot) are most of the
 * code, and the device list should not wait for them.
 */
function lazy<P extends object>(load: () => Promise<ComponentType<P>>) {
  let Loaded: ComponentType<P> | undefined
  let loading: Promise<void> | undefined
  const preload = () =>
    (loading ??= load().then((c) => {
      Loaded = c
    }))
  const Page = (props: P) => {
    const [, setDone] = useState(false)
    if (Loaded) return <Loaded {...props} />
    void preload().then(() => setDone(true))
    return <p class="muted">Loading…</p>
  }
  return Object.assign(Page, { preload })
}

const MapPage = lazy(() => import('./pages/map').then((m) => m.MapPage))
const ChartsPage = lazy(() => import('./pages/charts').then((m) => m.ChartsPage))
const OperationsPage = lazy(() => import('./pages/operations').then((m) => m.OperationsPage))
// A page opened by its URL is fetched while signing in, not after.
;({ map: MapPage, charts: ChartsPage, operations: OperationsPage })[
  parseRoute(location.hash).page as 'map' | 'charts' | 'operations'
]?.preload()

type Phase =
  | { kind: 'checking' }
  | { kind: 'signin'; error?: string }
  | { kind: 'notready'; readiness: Readiness | null; token: string }
  | { kind: 'app' }

const TITLES: Record<Page, string> = {
  devices: 'Devices',
  map: 'Map',
  charts: 'Charts',
  alerts: 'Alerts',
  quarantine: 'Quarantine',
  operations: 'Operations',
}

/** What each page shows live: the stream is filtered to it, and opened again when the page changes. */
function filterFor(route: Route): StreamFilter {
  // Alerts count on the device list and fill their page, where the server has them.
  const alerts = server.info?.features.alerts ? ['alerts'] : []
  switch (route.page) {
    case 'devices':
      return { topics: ['telemetry', 'status', ...alerts] }
    case 'map':
      return { topics: ['telemetry', 'status'] }
    case 'charts':
      return route.id ? { topics: ['telemetry', 'status'], devices: [route.id] } : { topics: ['status'] }
    case 'quarantine':
      return { topics: ['quarantine', 'status'] }
    case 'operations':
      return { topics: ['ingest'] }
    case 'alerts':
      return { topics: ['status', ...alerts] }
  }
}

/**
 * Signs in with `token`: the platform must be ready (else the not-ready screen, which retries), and the token
 * must be the admin token (else the sign-in screen says so). Only then is it kept, in session storage.
 */
async function signIn(token: string, setPhase: (p: Phase) => void): Promise<void> {
  // Both at once: one round trip less before the first page.
  const asked = api<ConsoleInfo>('GET', '/console', undefined, { token })
  asked.catch(() => {})
  let ready: Readiness | null = null
  try {
    ready = await readiness()
  } catch {
    ready = null
  }
  if (ready?.status !== 'ready') return setPhase({ kind: 'notready', readiness: ready, token })
  try {
    const info = await asked
    server.info = info
    server.skewMs = info.now - Date.now()
    session.set(token)
    setPhase({ kind: 'app' })
  } catch (err) {
    session.clear()
    const e = err as ApiError
    setPhase({
      kind: 'signin',
      error:
        e instanceof ApiError && e.status === 401
          ? 'This is not the admin token. It was printed on the first start and is kept in the data directory (data/admin-token), or set by IOTCORE_ADMIN_TOKEN.'
          : `The platform did not answer: ${e.message}`,
    })
  }
}

function Root() {
  const [phase, setPhase] = useState<Phase>(() => (session.token ? { kind: 'checking' } : { kind: 'signin' }))
  useEffect(() => {
    whenUnauthorized(() => {
      session.clear()
      setPhase({ kind: 'signin', error: 'The admin token no longer works: sign in again.' })
    })
    if (session.token) void signIn(session.token, setPhase)
  }, [])
  switch (phase.kind) {
    case 'checking':
      return <Splash text="Connecting…" />
    case 'signin':
      return <SignIn error={phase.error} onToken={(t) => signIn(t, setPhase)} />
    case 'notready':
      return (
        <NotReady
          readiness={phase.readiness}
          retry={() => signIn(phase.token, setPhase)}
          back={() => setPhase({ kind: 'signin' })}
        />
      )
    case 'app':
      return (
        <Shell
          signOut={() => {
            session.clear()
            setPhase({ kind: 'signin' })
          }}
        />
      )
  }
}

function Splash({ text }: { text: string }) {
  return (
    <main class="center">
      <p aria-live="polite">{text}</p>
    </main>
  )
}

function SignIn({ error, onToken }: { error?: string; onToken: (t: string) => Promise<void> }) {
  const [token, setToken] = useState('')
  const [busy, setBusy] = useState(false)
  return (
    <main class="center">
      <form
        class="card signin"
        onSubmit={async (e) => {
          e.preventDefault()
          setBusy(true)
          await onToken(token.trim())
          setBusy(false)
        }}
      >
        <h1>
          <Logo /> iotcore
        </h1>
        <p class="muted">Sign in with the admin token. It stays in this tab only (session storage).</p>
        <label for="token">Admin token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          value={token}
          onInput={(e) => setToken(e.currentTarget.value)}
          aria-invalid={error ? 'true' : undefined}
          aria-describedby={error ? 'signin-error' : undefined}
        />
        <ErrorText id="signin-error" error={error} />
        <button type="submit" class="primary" disabled={busy || !token.trim()}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  )
}

function NotReady(props: { readiness: Readiness | null; retry: () => Promise<void>; back: () => void }) {
  // Looks again every few seconds: the screen goes away by itself once the platform is ready.
  useEffect(() => {
    const t = setTimeout(() => void props.retry(), 3000)
    return () => clearTimeout(t)
  }, [props.readiness])
  const parts = props.readiness ? Object.entries(props.readiness.components) : []
  return (
    <main class="center">
      <section class="card notready" aria-labelledby="nr-title">
        <h1 id="nr-title">The platform is not ready</h1>
        <p role="status">
          {props.readiness
            ? 'These components are not working yet; this page checks again every 3 seconds.'
            : 'The server does not answer /readyz; this page checks again every 3 seconds.'}
        </p>
        {parts.length > 0 && (
          <table>
            <TableHead cols={['component', 'state', 'detail']} />
            <tbody>
              {parts.map(([name, h]) => (
                <tr key={name}>
                  <td>{name}</td>
                  <td>
                    <HealthPill ok={h.ok} />
                  </td>
                  <td>{h.detail ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <div class="row">
          <button type="button" onClick={() => void props.retry()}>
            Check now
          </button>
          <button type="button" class="link" onClick={props.back}>
            Use another token
          </button>
        </div>
      </section>
    </main>
  )
}

type Theme = 'auto' | 'light' | 'dark'

function useTheme(): [Theme, () => void] {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem('iotcore.theme') as Theme) || 'auto')
  useEffect(() => {
    if (theme === 'auto') delete document.documentElement.dataset.theme
    else document.documentElement.dataset.theme = theme
    localStorage.setItem('iotcore.theme', theme)
  }, [theme])
  const next = () => setTheme((t) => (t === 'auto' ? 'light' : t === 'light' ? 'dark' : 'auto'))
  return [theme, next]
}

function Shell({ signOut }: { signOut: () => void }) {
  const route = useRoute()
  const [theme, nextTheme] = useTheme()
  const [live, setLive] = useState<'connecting' | 'live' | 'down'>('connecting')
  const filter = useMemo(() => filterFor(route), [route.page, route.id])
  const key = JSON.stringify(filter)
  useEffect(() => {
    setLive('connecting')
    streamOpening()
    return openStream(
      filter,
      (e) => {
        if (e.type === 'ready') setLive('live')
        if (e.type === 'down') setLive('down')
        if (e.type === 'telemetry') fleet.telemetry(e.data)
        if (e.type === 'status') fleet.status(e.data)
        publish(e)
      },
      signOut,
    )
  }, [key])
  useEffect(() => {
    document.title = `${TITLES[route.page]} · iotcore`
  }, [route.page])
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href('devices')} aria-label="iotcore console home">
          <Logo /> <span>iotcore</span>
        </a>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p} href={href(p)} aria-current={route.page === p ? 'page' : undefined}>
              {TITLES[p]}
            </a>
          ))}
        </nav>
        <div class="tools">
          <span class={`live ${live}`} role="status" title="live stream">
            {live === 'live' ? 'live' : live === 'down' ? 'reconnecting' : 'connecting'}
          </span>
          <button type="button" class="icon" onClick={nextTheme} aria-label={`Theme: ${theme}; change`}>
            {theme === 'dark' ? '☾' : theme === 'light' ? '☀' : '◐'}
          </button>
          <button type="button" class="link" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" class="page" tabIndex={-1}>
        {route.page === 'devices' && <DevicesPage id={route.id} />}
        {route.page === 'map' && <MapPage id={route.id} />}
        {route.page === 'charts' && <ChartsPage id={route.id} range={route.arg} />}
        {route.page === 'alerts' && <AlertsPage />}
        {route.page === 'quarantine' && <QuarantinePage />}
        {route.page === 'operations' && <OperationsPage />}
      </main>
    </div>
  )
}

function Logo() {
  return (
    <svg class="logo" viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
      <circle cx="12" cy="12" r="3" fill="currentColor" />
      <path
        d="M5 12a7 7 0 0 1 14 0M2 12a10 10 0 0 1 20 0"
        fill="none"
        stroke="currentColor"
        stroke-width="2"
      />
    </svg>
  )
}

render(<Root />, document.getElementById('app')!)
