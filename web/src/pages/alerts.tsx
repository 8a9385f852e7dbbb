import { useEffect, useState } from 'preact/hooks'
import { type Alert, ApiError, get, post } from '../api'
import { useOnReady, useStreamEvents } from '../bus'
import { dateTime } from '../format'
import { href } from '../route'
import { fleet, server } from '../state'
import { ErrorText, TableHead } from '../ui/parts'

const SEVERITY_ORDER = ['critical', 'major', 'minor', 'warning']

/** Whether this server has the alerts API: its settings say so, and a 404 says it does not after all. */
let available = () => server.info?.features.alerts === true

/** The open (active) alerts; the list answer may be an array or hold it under `alerts` or `items`. */
async function openAlerts(): Promise<Alert[]> {
  try {
    const r = await get<any>('/alerts?status=active')
    return Array.isArray(r) ? r : (r?.alerts ?? r?.items ?? [])
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && err.code === 'IOT_ERR_NOT_FOUND') {
      available = () => false
      return []
    }
    throw err
  }
}

/**
 * Calls `read` whenever the open alerts should be read: once the stream listens, after a gap in it, and each
 * time it says alerts changed.
 */
function useAlertsChanged(read: () => void): void {
  useOnReady(() => {
    if (available()) read()
  })
  useStreamEvents((e) => {
    if (e.type === 'alerts' && available()) read()
  })
}

/** Open alerts per device id, kept current while the calling view is shown; empty without the alerts API. */
export function useOpenAlerts(): Map<string, number> {
  const [counts, setCounts] = useState(new Map<string, number>())
  useAlertsChanged(() =>
    openAlerts()
      .then((list) => {
        const m = new Map<string, number>()
        for (const a of list) if (a.deviceId) m.set(a.deviceId, (m.get(a.deviceId) ?? 0) + 1)
        setCounts(m)
      })
      .catch(() => {}),
  )
  return counts
}

export function AlertsPage() {
  const [alerts, setAlerts] = useState<Alert[] | null>(null)
  const [error, setError] = useState<string>()
  const [, setTick] = useState(0)
  const read = () =>
    openAlerts().then(
      (list) => {
        setAlerts(
          list.sort(
            (a, b) =>
              SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity) ||
              b.lastSeen.localeCompare(a.lastSeen),
          ),
        )
        setError(undefined)
      },
      (err) => setError((err as Error).message),
    )
  useEffect(() => {
    if (available() && !fleet.loaded)
      void fleet.load().then(
        () => setTick((x) => x + 1),
        () => {},
      )
  }, [])
  useAlertsChanged(() => void read())

  if (!available())
    return (
      <section class="panel" aria-labelledby="alerts-title">
        <h1 id="alerts-title">Alerts</h1>
        <div class="empty" data-testid="alerts-unavailable">
          <p>
            <strong>Alerts are not available on this server.</strong>
          </p>
          <p class="muted">
            This build of iotcore has no alerts API (<code>GET /api/v1/alerts</code>): the organizer's rules
            and alerts come with a later version. Devices, telemetry and the quarantine work as usual.
          </p>
        </div>
      </section>
    )

  const act = async (a: Alert, what: 'ack' | 'clear') => {
    try {
      await post(`/alerts/${encodeURIComponent(a.id)}/${what}`)
      await read()
    } catch (err) {
      setError((err as Error).message)
    }
  }
  return (
    <section class="panel" aria-labelledby="alerts-title">
      <div class="toolbar">
        <h1 id="alerts-title">Alerts</h1>
        <span class="muted">{alerts ? `${alerts.length} open` : 'loading…'}</span>
      </div>
      <ErrorText error={error} />
      {alerts && alerts.length === 0 && <p class="empty">No open alerts.</p>}
      {alerts && alerts.length > 0 && (
        <div class="table-wrap">
          <table class="alerts">
            <TableHead cols={['severity', 'alert', 'source', 'first / last seen', 'count', 'actions']} />
            <tbody>
              {alerts.map((a) => (
                <tr key={a.id} data-alert={a.id}>
                  <td>
                    <span class={`pill sev-${a.severity}`}>{a.severity}</span>
                  </td>
                  <td>
                    <strong>{a.type}</strong>
                    {a.details !== undefined && a.details !== null && (
                      <div class="muted small mono">{JSON.stringify(a.details)}</div>
                    )}
                  </td>
                  <td>
                    {a.deviceId ? (
                      <a href={href('devices', a.deviceId)}>
                        {fleet.devices.get(a.deviceId)?.name ?? a.deviceId}
                      </a>
                    ) : (
                      (a.service ?? 'platform')
                    )}
                  </td>
                  <td>
                    {dateTime(a.firstSeen)}
                    <br />
                    {dateTime(a.lastSeen)}
                  </td>
                  <td>{a.count}</td>
                  <td>
                    <div class="row">
                      {a.acknowledged ? (
                        <span class="pill muted">acknowledged</span>
                      ) : (
                        <button type="button" onClick={() => act(a, 'ack')}>
                          Acknowledge
                        </button>
                      )}
                      <button type="button" onClick={() => act(a, 'clear')}>
                        Clear
                      </button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}
