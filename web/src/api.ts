/** The admin API as the console calls it: the token from session storage as a bearer header, never in a URL. */

const TOKEN_KEY = 'iotcore.adminToken'

export const session = {
  get token(): string | null {
    return sessionStorage.getItem(TOKEN_KEY)
  },
  set(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token)
  },
  clear(): void {
    sessionStorage.removeItem(TOKEN_KEY)
  },
}

/** An answer that was not 2xx, with the API's coded error when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message)
  }
}

/** Called when the token stops working (401): the app signs out. */
let onUnauthorized: (() => void) | undefined
export function whenUnauthorized(fn: () => void): void {
  onUnauthorized = fn
}

export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string; signal?: AbortSignal } = {},
): Promise<T> {
  const token = opts.token ?? session.token ?? ''
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const r = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: opts.signal,
  })
  if (r.status === 204) return undefined as T
  const text = await r.text()
  let json: any
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    json = undefined
  }
  if (!r.ok) {
    if (r.status === 401 && opts.token === undefined) onUnauthorized?.()
    throw new ApiError(r.status, json?.code, json?.message ?? `${r.status} ${r.statusText}`)
  }
  return json as T
}

export const get = <T>(path: string, signal?: AbortSignal) => api<T>('GET', path, undefined, { signal })
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body)

/** A query string from the defined values. */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const u = new URLSearchParams()
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v))
  const s = u.toString()
  return s ? `?${s}` : ''
}

// The shapes the console reads (src/api/console.ts and src/api/schemas.ts).

export interface Point {
  ts: number
  value: unknown
}

export interface FleetDevice {
  id: string
  name: string
  imei: string | null
  createdAt: string
  lastSeenAt: string | null
  latest: Record<string, Point>
}

export interface ConsoleInfo {
  now: number
  offlineAfterSeconds: number
  map: { tiles: string | null; attribution: string | null }
  listeners: {
    http: number
    mqtt: number | null
    mqttWebSocket: string | null
    teltonika: number | null
    osmand: number | null
    jsonl: number | null
    signal: number | null
  }
  features: { alerts: boolean }
}

export interface CreatedDevice extends FleetDevice {
  token: string
}

export interface Series {
  intervalMs: number
  /** Each bucket's first reading, not its aggregate: shown until the aggregate arrives. */
  sampled: boolean
  from: number
  to: number
  ts: number[]
  keys: Record<string, { avg: Array<number | null>; min: Array<number | null>; max: Array<number | null> }>
}

export interface QuarantineItem {
  id: string
  deviceId: string | null
  transport: string
  topic: string | null
  reason: string
  detail: string
  payload: string
  payloadEncoding: 'utf8' | 'base64'
  acked: boolean
  receivedAt: string
  replayedAt: string | null
}

/** An alert as CONTRACT.md has it (the organizer's routes, where this build has them). */
export interface Alert {
  id: string
  type: string
  severity: string
  deviceId?: string | null
  service?: string | null
  status: string
  acknowledged: boolean
  firstSeen: string
  lastSeen: string
  count: number
  details?: unknown
}

export interface Readiness {
  status: string
  components: Record<string, { ok: boolean; detail?: string; [k: string]: unknown }>
}

/** /readyz is outside the admin API: no token, and a 503 still carries the components. */
export async function readiness(signal?: AbortSignal): Promise<Readiness> {
  const r = await fetch('/readyz', { signal })
  return (await r.json()) as Readiness
}
