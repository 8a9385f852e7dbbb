import { useEffect, useMemo, useRef, useState } from 'preact/hooks'
import { api, type CreatedDevice, type FleetDevice, post } from '../api'
import { useOnReady } from '../bus'
import { ago, dateTime, summary, value } from '../format'
import { href } from '../route'
import { fleet, server, type Status, statusOf, useFleet, useTick } from '../state'
import { ErrorText, TableHead } from '../ui/parts'
import { TokenAndSnippets } from '../ui/snippets'
import { VirtualList } from '../ui/virtual-list'
import { useOpenAlerts } from './alerts'

type Sort = 'name' | 'seen' | 'status' | 'created'
const SORTS: Record<Sort, string> = {
  seen: 'last seen',
  name: 'name',
  status: 'status',
  created: 'created',
}
const STATUS_ORDER: Record<Status, number> = { online: 0, offline: 1, never: 2 }
const seenMs = (d: FleetDevice) => (d.lastSeenAt ? Date.parse(d.lastSeenAt) : 0)

function sorter(sort: Sort): (a: FleetDevice, b: FleetDevice) => number {
  switch (sort) {
    case 'name':
      return (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id)
    case 'seen':
      return (a, b) => seenMs(b) - seenMs(a) || a.name.localeCompare(b.name)
    case 'status':
      return (a, b) => STATUS_ORDER[statusOf(a)] - STATUS_ORDER[statusOf(b)] || a.name.localeCompare(b.name)
    case 'created':
      return (a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id)
  }
}

/** Rows are this tall on a wide screen, taller on a phone where the row wraps. */
const ROW_PX = matchMedia('(max-width: 700px)').matches ? 64 : 48

export function DevicesPage({ id }: { id?: string }) {
  const version = useFleet()
  useTick(5000)
  const now = server.now()
  const alerts = useOpenAlerts()
  const [query, setQuery] = useState('')
  const [sort, setSort] = useState<Sort>('seen')
  const [creating, setCreating] = useState(false)
  const [error, setError] = useState<string>()
  // Each time the stream is (again) listening, the whole fleet is read: nothing committed meanwhile is missed.
  useOnReady(() =>
    fleet.load().then(
      () => setError(undefined),
      (err) => setError((err as Error).message),
    ),
  )
  const rows = useMemo(() => {
    const q = query.trim().toLowerCase()
    const all = [...fleet.devices.values()]
    const hits = q
      ? all.filter(
          (d) =>
            d.name.toLowerCase().includes(q) || d.id.includes(q) || (d.imei ?? '').toLowerCase().includes(q),
        )
      : all
    return hits.sort(sorter(sort))
  }, [version, query, sort, Math.floor(now / 30_000)])
  const selected = id ? fleet.devices.get(id) : undefined
  const online = rows.reduce((n, d) => n + (statusOf(d) === 'online' ? 1 : 0), 0)

  return (
    <div class={`split ${id ? 'has-detail' : ''}`}>
      <section class="panel list-panel" aria-labelledby="devices-title">
        <div class="toolbar">
          <h1 id="devices-title">Devices</h1>
          <span class="muted" aria-live="polite">
            {fleet.loaded
              ? `${rows.length.toLocaleString()} shown · ${online.toLocaleString()} online`
              : 'loading…'}
          </span>
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New device
          </button>
        </div>
        <div class="toolbar">
          <label class="grow">
            <span class="sr-only">Search devices</span>
            <input
              type="search"
              placeholder="Search by name, id or IMEI"
              value={query}
              onInput={(e) => setQuery(e.currentTarget.value)}
            />
          </label>
          <label>
            <span class="muted">Sort by </span>
            <select value={sort} onChange={(e) => setSort(e.currentTarget.value as Sort)}>
              {Object.entries(SORTS).map(([k, v]) => (
                <option key={k} value={k}>
                  {v}
                </option>
              ))}
            </select>
          </label>
        </div>
        <ErrorText error={error && `Could not read the fleet: ${error}`} />
        <div class="thead" aria-hidden="true">
          <span>device</span>
          <span>last seen</span>
          <span>last values</span>
          <span>alerts</span>
        </div>
        <VirtualList
          items={rows}
          rowHeight={ROW_PX}
          label="Devices"
          keyOf={(d) => d.id}
          row={(d) => {
            const s = statusOf(d)
            const n = alerts.get(d.id) ?? 0
            return (
              <a
                class={`device-row ${d.id === id ? 'selected' : ''}`}
                href={href('devices', d.id)}
                aria-current={d.id === id ? 'true' : undefined}
                data-device={d.id}
              >
                <span class="who">
                  <span class={`dot ${s}`} title={s} />
                  <span class="sr-only">{s}, </span>
                  <strong>{d.name}</strong> <span class="muted mono">{d.id}</span>
                </span>
                <span class="seen">{ago(d.lastSeenAt, now)}</span>
                <span class="values mono" data-testid="values">
                  {summary(d.latest)}
                </span>
                <span class="alerts">{n > 0 ? <span class="pill bad">{n}</span> : ''}</span>
              </a>
            )
          }}
        />
      </section>
      {id && (
        <DeviceDetail
          key={id}
          id={id}
          device={selected}
          loaded={fleet.loaded}
          alerts={alerts.get(id) ?? 0}
          now={now}
        />
      )}
      {creating && <CreateDialog close={() => setCreating(false)} />}
    </div>
  )
}

function DeviceDetail(props: {
  id: string
  device?: FleetDevice
  loaded: boolean
  alerts: number
  now: number
}) {
  const d = props.device
  const [rotated, setRotated] = useState<string>()
  const [deleting, setDeleting] = useState(false)
  const [error, setError] = useState<string>()
  if (!d)
    return (
      <aside class="panel detail" aria-label="Device">
        <a class="back" href={href('devices')}>
          ← Devices
        </a>
        <p>{props.loaded ? `No live device ${props.id}: it was retired or deleted.` : 'Loading…'}</p>
      </aside>
    )
  const s = statusOf(d)
  const keys = Object.keys(d.latest).sort()
  return (
    <aside class="panel detail" aria-labelledby="detail-title">
      <a class="back" href={href('devices')}>
        ← Devices
      </a>
      <h2 id="detail-title">
        <span class={`dot ${s}`} /> {d.name}
      </h2>
      <dl class="facts">
        <dt>id</dt>
        <dd class="mono">{d.id}</dd>
        <dt>status</dt>
        <dd>
          <span class={`pill ${s === 'online' ? 'ok' : 'muted'}`}>{s}</span>
        </dd>
        <dt>last seen</dt>
        <dd>{d.lastSeenAt ? `${dateTime(d.lastSeenAt)} (${ago(d.lastSeenAt, props.now)})` : 'never'}</dd>
        {d.imei && (
          <>
            <dt>IMEI</dt>
            <dd class="mono">{d.imei}</dd>
          </>
        )}
        <dt>created</dt>
        <dd>{dateTime(d.createdAt)}</dd>
        <dt>open alerts</dt>
        <dd>{props.alerts}</dd>
      </dl>
      <div class="row wrap">
        <a class="button" href={href('charts', d.id)}>
          Charts
        </a>
        <a class="button" href={href('map', d.id)}>
          Track on map
        </a>
        <button
          type="button"
          onClick={async () => {
            if (!confirm(`Rotate the token of ${d.name}? The old token stops working at once.`)) return
            try {
              setRotated((await post<{ token: string }>(`/devices/${d.id}/token`)).token)
            } catch (err) {
              setError((err as Error).message)
            }
          }}
        >
          Rotate token
        </button>
        <button type="button" class="danger" onClick={() => setDeleting(true)}>
          Delete…
        </button>
      </div>
      <ErrorText error={error} />
      {rotated && <TokenAndSnippets device={{ id: d.id, token: rotated, imei: d.imei }} title="New token" />}
      <h3>Latest values</h3>
      {keys.length === 0 ? (
        <p class="muted">No readings yet.</p>
      ) : (
        <table class="latest" data-testid="latest">
          <TableHead cols={['key', 'value', 'at']} />
          <tbody>
            {keys.map((k) => (
              <tr key={k}>
                <th scope="row">{k}</th>
                <td class="mono">{value(d.latest[k].value)}</td>
                <td>{dateTime(d.latest[k].ts)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {deleting && <DeleteDialog device={d} close={() => setDeleting(false)} />}
    </aside>
  )
}

/** A modal <dialog>: focus moves into it, Escape closes it. */
function Modal(props: { title: string; close: () => void; children: any }) {
  const ref = useRef<HTMLDialogElement>(null)
  useEffect(() => {
    ref.current?.showModal()
  }, [])
  return (
    <dialog ref={ref} aria-labelledby="modal-title" onClose={props.close} class="modal">
      <h2 id="modal-title">{props.title}</h2>
      {props.children}
    </dialog>
  )
}

function CreateDialog({ close }: { close: () => void }) {
  const [name, setName] = useState('')
  const [imei, setImei] = useState('')
  const [created, setCreated] = useState<CreatedDevice>()
  const [error, setError] = useState<string>()
  if (created)
    return (
      <Modal title={`Device ${created.name} created`} close={close}>
        <TokenAndSnippets device={created} title="Its token and how to connect" />
        <div class="row end">
          <a class="button" href={href('devices', created.id)} onClick={close}>
            Open device
          </a>
          <button type="button" class="primary" onClick={close}>
            Done
          </button>
        </div>
      </Modal>
    )
  return (
    <Modal title="New device" close={close}>
      <form
        onSubmit={async (e) => {
          e.preventDefault()
          try {
            const d = await api<CreatedDevice>('POST', '/devices', {
              name: name.trim(),
              ...(imei.trim() ? { imei: imei.trim() } : {}),
            })
            fleet.put({ ...d, latest: {} })
            setCreated(d)
          } catch (err) {
            setError((err as Error).message)
          }
        }}
      >
        <label for="new-name">Name</label>
        <input
          id="new-name"
          required
          maxLength={200}
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <label for="new-imei">IMEI (optional: for Teltonika trackers and Traccar Client)</label>
        <input
          id="new-imei"
          pattern="[0-9A-Za-z_\-]{1,32}"
          value={imei}
          onInput={(e) => setImei(e.currentTarget.value)}
        />
        <ErrorText error={error} />
        <div class="row end">
          <button type="button" onClick={close}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={!name.trim()}>
            Create
          </button>
        </div>
      </form>
    </Modal>
  )
}

function DeleteDialog({ device, close }: { device: FleetDevice; close: () => void }) {
  const [data, setData] = useState<'keep' | 'delete'>('keep')
  const [error, setError] = useState<string>()
  return (
    <Modal title={`Delete ${device.name}`} close={close}>
      <form
        onSubmit={async (e) => {
          e.preventDefault()
          try {
            await api('DELETE', `/devices/${device.id}?data=${data}`)
            fleet.remove(device.id)
            close()
            location.hash = href('devices')
          } catch (err) {
            setError((err as Error).message)
          }
        }}
      >
        <p>Either way the device can no longer connect, and its live connections are cut.</p>
        <fieldset>
          <legend>Its telemetry</legend>
          <label class="radio">
            <input type="radio" name="data" checked={data === 'keep'} onChange={() => setData('keep')} /> Keep
            it readable (retire the device)
          </label>
          <label class="radio">
            <input type="radio" name="data" checked={data === 'delete'} onChange={() => setData('delete')} />{' '}
            Delete it with the device
          </label>
        </fieldset>
        <ErrorText error={error} />
        <div class="row end">
          <button type="button" onClick={close}>
            Cancel
          </button>
          <button type="submit" class="danger">
            {data === 'keep' ? 'Retire device' : 'Delete device and data'}
          </button>
        </div>
      </form>
    </Modal>
  )
}
