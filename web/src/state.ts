import { useEffect, useState } from 'preact/hooks'
import { type ConsoleInfo, type FleetDevice, get } from './api'

/** The server's settings, read at sign-in, and the difference between its clock and this browser's. */
export const server = {
  info: undefined as ConsoleInfo | undefined,
  skewMs: 0,
  now(): number {
    return Date.now() + this.skewMs
  },
}

export type Status = 'online' | 'offline' | 'never'

/** Online as the API defines it: seen within IOTCORE_OFFLINE_AFTER, by the server's clock. */
export function statusOf(d: FleetDevice): Status {
  if (!d.lastSeenAt) return 'never'
  const after = (server.info?.offlineAfterSeconds ?? 600) * 1000
  return server.now() - Date.parse(d.lastSeenAt) < after ? 'online' : 'offline'
}

/** Where a device is, from its latest lat/lon. */
export function positionOf(d: FleetDevice): [number, number] | undefined {
  const lat = d.latest.lat?.value
  const lon = d.latest.lon?.value
  return typeof lat === 'number' && typeof lon === 'number' ? [lat, lon] : undefined
}

/** Pages of GET /fleet: large enough that 10,000 devices take two requests. */
const FLEET_PAGE = 5000

/**
 * The fleet as the list and the map show it: every live device with its latest values, read whole, then kept
 * current by the live stream. Views re-render at most once per frame however many updates arrive.
 */
class Fleet {
  devices = new Map<string, FleetDevice>()
  version = 0
  loaded = false
  private readonly listeners = new Set<() => void>()
  private frame = 0

  async load(): Promise<void> {
    const all = new Map<string, FleetDevice>()
    let cursor: string | null = null
    do {
      const page: { devices: FleetDevice[]; next: string | null } = await get(
        `/fleet?limit=${FLEET_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      )
      for (const d of page.devices) all.set(d.id, d)
      cursor = page.next
    } while (cursor)
    this.devices = all
    this.loaded = true
    this.changed()
  }

  /** New latest values: only newer keys replace what is shown (an older event never rolls a value back). */
  telemetry(updates: Array<{ id: string; lastSeenAt: string | null; latest: FleetDevice['latest'] }>): void {
    for (const u of updates) {
      const d = this.devices.get(u.id)
      if (!d) continue
      const latest = { ...d.latest }
      for (const [k, p] of Object.entries(u.latest)) if (!latest[k] || latest[k].ts <= p.ts) latest[k] = p
      const seen =
        d.lastSeenAt && u.lastSeenAt && Date.parse(d.lastSeenAt) > Date.parse(u.lastSeenAt)
          ? d.lastSeenAt
          : u.lastSeenAt
      this.devices.set(u.id, { ...d, lastSeenAt: seen, latest })
    }
    this.changed()
  }

  /** A device created or changed (its row), or gone from the fleet (null). */
  status(changes: Array<{ id: string; device: FleetDevice | null }>): void {
    for (const c of changes) {
      if (c.device) this.devices.set(c.id, c.device)
      else this.devices.delete(c.id)
    }
    this.changed()
  }

  put(d: FleetDevice): void {
    this.devices.set(d.id, d)
    this.changed()
  }

  remove(id: string): void {
    this.devices.delete(id)
    this.changed()
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  private changed(): void {
    this.version++
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      for (const l of this.listeners) l()
    })
  }
}

export const fleet = new Fleet()

/** Re-renders the calling view when the fleet changes; returns the fleet's version. */
export function useFleet(): number {
  const [v, setV] = useState(fleet.version)
  useEffect(() => fleet.subscribe(() => setV(fleet.version)), [])
  return v
}

/**
 * One device as the fleet has it, read alone when the fleet is not loaded (a chart opened by its URL need not
 * wait for 10,000 devices); undefined while loading, null if there is no such live device.
 */
export function useDevice(id: string | undefined): FleetDevice | null | undefined {
  const version = useFleet()
  const [alone, setAlone] = useState<FleetDevice | null | undefined>(undefined)
  useEffect(() => {
    setAlone(undefined)
    if (!id || fleet.devices.has(id)) return
    let stop = false
    Promise.all([
      get<FleetDevice & { retiredAt: string | null }>(`/devices/${encodeURIComponent(id)}`),
      get<{ values: FleetDevice['latest'] }>(`/devices/${encodeURIComponent(id)}/latest`),
    ]).then(
      ([d, l]) => {
        if (stop) return
        // Kept in the fleet, where the live stream's updates for it land.
        if (!d.retiredAt) fleet.put({ ...d, latest: l.values })
        else setAlone(null)
      },
      () => !stop && setAlone(null),
    )
    return () => {
      stop = true
    }
  }, [id])
  if (!id) return undefined
  void version
  return fleet.devices.get(id) ?? alone
}

/** Re-renders every `ms`, for what depends on the clock (online turns offline with no event). */
export function useTick(ms: number): number {
  const [t, setT] = useState(0)
  useEffect(() => {
    const i = setInterval(() => setT((x) => x + 1), ms)
    return () => clearInterval(i)
  }, [ms])
  return t
}
