import { useEffect, useMemo, useState } from 'preact/hooks'
import { fleet, useFleet } from '../state'

/** Choose a device by name, id or IMEI: the first matches of the fleet, however large. */
export function DevicePicker(props: { value?: string; choose: (id: string) => void; label?: string }) {
  const version = useFleet()
  const [q, setQ] = useState('')
  const [searching, setSearching] = useState(false)
  const open = searching || !props.value
  // The whole fleet is read only when someone searches it.
  useEffect(() => {
    if (open && !fleet.loaded) void fleet.load().catch(() => {})
  }, [open])
  const current = props.value ? fleet.devices.get(props.value) : undefined
  const hits = useMemo(() => {
    const s = q.trim().toLowerCase()
    const out = []
    for (const d of fleet.devices.values()) {
      if (!s || d.name.toLowerCase().includes(s) || d.id.includes(s) || (d.imei ?? '').includes(s))
        out.push(d)
      if (out.length >= 12) break
    }
    return out
  }, [q, version])
  if (!open)
    return (
      <div class="picker row">
        <span>
          <span class="muted">{props.label ?? 'Device'}: </span>
          <strong>{current?.name ?? props.value}</strong>
        </span>
        <button type="button" class="small" onClick={() => setSearching(true)}>
          Change
        </button>
      </div>
    )
  return (
    <div class="picker">
      <label>
        <span class="muted">{props.label ?? 'Device'} </span>
        <input
          type="search"
          placeholder="Search by name, id or IMEI"
          value={q}
          onInput={(e) => setQ(e.currentTarget.value)}
          aria-controls="picker-hits"
        />
      </label>
      <ul id="picker-hits" class="hits" aria-label="Matching devices">
        {hits.map((d) => (
          <li key={d.id}>
            <button
              type="button"
              class="link"
              onClick={() => {
                setSearching(false)
                setQ('')
                props.choose(d.id)
              }}
            >
              {d.name} <span class="muted mono">{d.id}</span>
            </button>
          </li>
        ))}
        {hits.length === 0 && (
          <li class="muted">{fleet.loaded ? 'No device matches.' : 'Loading devices…'}</li>
        )}
      </ul>
    </div>
  )
}
