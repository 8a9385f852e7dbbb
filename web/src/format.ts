/** How the console writes times, values and bytes. */

export function ago(iso: string | null, now: number): string {
  if (!iso) return 'never'
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000))
  if (s < 5) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86400)} d ago`
}

export function dateTime(ms: number | string): string {
  const d = new Date(ms)
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' })
}

export function value(v: unknown): string {
  // Four decimals for small numbers, two for large ones, trailing zeros dropped.
  if (typeof v === 'number')
    return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(Math.abs(v) < 10 ? 4 : 2)))
  if (typeof v === 'string') return v
  return JSON.stringify(v)
}

/** A few of a device's latest values, for a list row: position keys last. */
export function summary(latest: Record<string, { value: unknown }>, max = 3): string {
  const keys = Object.keys(latest).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
  return keys
    .slice(0, max)
    .map((k) => `${k} ${value(latest[k].value)}`)
    .join(' · ')
}

const rank = (k: string) => (k === 'lat' || k === 'lon' || k === 'alt' || k === 'heading' ? 1 : 0)

/** Bytes as an offset, hex and printable column, 16 a line. */
export function hexDump(bytes: Uint8Array): string {
  const lines: string[] = []
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16)
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ')
    const text = [...row].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('')
    lines.push(`${i.toString(16).padStart(6, '0')}  ${hex.padEnd(47)}  ${text}`)
  }
  return lines.join('\n')
}

export function base64Bytes(b64: string): Uint8Array {
  const bin = atob(b64)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

/** A datetime-local input's value for ms since the epoch (local time, to the minute). */
export function toLocalInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000)
  return d.toISOString().slice(0, 16)
}
