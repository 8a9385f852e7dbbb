/**
 * The faults `iotcore simulate` injects, each on vehicles of its own, and how it asks the platform afterwards
 * which of them its organizer caught (README "Alerts" and "Rules"): the GPS faults by their flagged readings
 * and the `device_check` alert they add up to, the silent device by its `offline` alert, the skipped sequence
 * numbers by the gap `GET /devices/:id/gaps` reports and its `sequence_gap` alert.
 */

/**
 * Flagged readings each GPS fault makes: past IOTCORE_DEVICE_CHECK_VIOLATIONS' default (10), so that with the
 * default window (an hour) the device_check alert opens.
 */
export const FLAGGED = 12
/** The reading after which the silent device stops, and the one after which the sequence skips SKIPPED. */
const SILENT_AFTER = 10
const GAP_AFTER = 6
const SKIPPED = 5
const ZERO_FROM = 5
const JUMP_FROM = 7
/** How far north a jump goes, in degrees (about 170 km): far past any speed limit in one reading's time. */
const JUMP_DEG = 1.5

export const FAULTS = {
  gps_zero: `readings ${ZERO_FROM} to ${ZERO_FROM + FLAGGED - 1} at lat 0, lon 0 (a GPS without a fix)`,
  gps_jump: `every other reading from the ${JUMP_FROM}th, ${FLAGGED} times, about 170 km north (a GPS jumping)`,
  silent: `stops sending after reading ${SILENT_AFTER} (a silent device)`,
  seq_gap: `skips seq ${GAP_AFTER + 1} to ${GAP_AFTER + SKIPPED} (a gap in its sequence numbers)`,
} as const
export type Fault = keyof typeof FAULTS

/** Readings a vehicle sends (or would, for the silent one) before its fault is all there. */
export const READINGS_FOR: Record<Fault, number> = {
  gps_zero: ZERO_FROM + FLAGGED - 1,
  gps_jump: JUMP_FROM + 2 * (FLAGGED - 1),
  silent: SILENT_AFTER + 1,
  seq_gap: GAP_AFTER + 1,
}

/**
 * The `k`th reading (from 1) of a vehicle with `fault`: false if it is not sent (silent); else its values
 * changed in place, and how many sequence numbers to skip before it.
 */
export function inject(fault: Fault | undefined, k: number, values: Record<string, unknown>): false | number {
  switch (fault) {
    case 'silent':
      return k > SILENT_AFTER ? false : 0
    case 'seq_gap':
      return k === GAP_AFTER + 1 ? SKIPPED : 0
    case 'gps_zero':
      if (k >= ZERO_FROM && k < ZERO_FROM + FLAGGED) {
        values.lat = 0
        values.lon = 0
      }
      return 0
    case 'gps_jump':
      if (k >= JUMP_FROM && k < JUMP_FROM + 2 * FLAGGED && (k - JUMP_FROM) % 2 === 0)
        values.lat = Math.round(((values.lat as number) + JUMP_DEG) * 1e6) / 1e6
      return 0
    default:
      return 0
  }
}

/** A faulty vehicle as the summary shows it. */
export interface FaultyDevice {
  id: string
  name: string
  fault: Fault
  /** Readings it was due to send in the run (the silent one's unsent ones included). */
  readings: number
}

/** What the platform made of one fault. */
export interface Catch {
  device: FaultyDevice
  caught: boolean
  /** What caught it (the flags, the alert), or what is missing and what governs it. */
  detail: string
  /** The alert that caught it. */
  alertId?: string
}

export interface Api {
  get(path: string): Promise<{ status: number; body: any }>
}

/** When the run began: the platform's clock for its alerts and gaps, ours for the readings' `ts`. */
export interface Since {
  server: number
  local: number
}

/** What the platform said of its thresholds (GET /console), where it says. */
export interface Thresholds {
  offlineAfterSeconds?: number
}

interface AlertItem {
  id: string
  type: string
  status: string
  lastSeen: string
  details: Record<string, any>
}

/** The device's latest alert of `type` raised or bumped since the run began. */
async function alertOf(
  api: Api,
  deviceId: string,
  type: string,
  since: Since,
): Promise<AlertItem | undefined> {
  const r = await api.get(`/alerts?deviceId=${encodeURIComponent(deviceId)}&type=${type}&limit=10`)
  if (r.status !== 200) throw new Error(`GET /api/v1/alerts answered ${r.status}: ${JSON.stringify(r.body)}`)
  return (r.body.items as AlertItem[]).find((a) => Date.parse(a.lastSeen) >= since.server)
}

async function flaggedCount(api: Api, deviceId: string, flag: string, since: Since): Promise<number> {
  const r = await api.get(
    `/devices/${encodeURIComponent(deviceId)}/telemetry?keys=lat&flagged=true&from=${since.local}&limit=10000`,
  )
  if (r.status !== 200)
    throw new Error(
      `GET /api/v1/devices/${deviceId}/telemetry answered ${r.status}: ${JSON.stringify(r.body)}`,
    )
  return (r.body.lat as Array<{ flags?: string[] }>).filter((p) => p.flags?.includes(flag)).length
}

const clock = (iso: string) => new Date(iso).toISOString().slice(11, 19)

/** Asks the platform about one fault. */
async function ask(api: Api, d: FaultyDevice, since: Since, t: Thresholds): Promise<Catch> {
  if (d.fault === 'gps_zero' || d.fault === 'gps_jump') {
    const flagged = await flaggedCount(api, d.id, d.fault, since)
    const alert = await alertOf(api, d.id, 'device_check', since)
    const readings = `${flagged} reading${flagged === 1 ? '' : 's'} flagged ${d.fault}`
    if (alert) {
      const x = alert.details
      return {
        device: d,
        caught: flagged > 0,
        alertId: alert.id,
        detail: `${readings} -> device_check alert ${alert.id} (${x.violations} violations within ${x.windowSeconds} s, threshold ${x.threshold})`,
      }
    }
    return {
      device: d,
      caught: false,
      detail: `${readings}, no device_check alert yet: it opens at IOTCORE_DEVICE_CHECK_VIOLATIONS flagged readings (10 by default) within IOTCORE_DEVICE_CHECK_WINDOW (3600 s by default)`,
    }
  }
  if (d.fault === 'silent') {
    const alert = await alertOf(api, d.id, 'offline', since)
    if (alert)
      return {
        device: d,
        caught: true,
        alertId: alert.id,
        detail: `offline alert ${alert.id} (last seen ${clock(alert.details.lastSeenAt)}, offline after ${alert.details.offlineAfterSeconds} s)`,
      }
    const after = t.offlineAfterSeconds === undefined ? '' : ` (${t.offlineAfterSeconds} s here)`
    return {
      device: d,
      caught: false,
      detail: `no offline alert yet: it opens once the device is silent for IOTCORE_OFFLINE_AFTER${after}, at the organizer's next check (IOTCORE_CHECK_INTERVAL)`,
    }
  }
  const r = await api.get(`/devices/${encodeURIComponent(d.id)}/gaps?status=all&limit=100`)
  if (r.status !== 200)
    throw new Error(`GET /api/v1/devices/${d.id}/gaps answered ${r.status}: ${JSON.stringify(r.body)}`)
  const gap = (
    r.body.gaps as Array<{ from: number; to: number; missingCount: number; openedAt: string }>
  ).find((g) => Date.parse(g.openedAt) >= since.server)
  if (!gap) return { device: d, caught: false, detail: 'no gap reported yet' }
  const reported = `gap ${gap.from}..${gap.to} reported (${gap.missingCount} missing)`
  const alert = await alertOf(api, d.id, 'sequence_gap', since)
  if (alert)
    return {
      device: d,
      caught: true,
      alertId: alert.id,
      detail: `${reported} -> sequence_gap alert ${alert.id}`,
    }
  return {
    device: d,
    caught: false,
    detail: `${reported}, no sequence_gap alert yet: it opens once the gap is open for IOTCORE_GAP_ALERT_AFTER (600 s by default), at the ingest's next check (IOTCORE_CHECK_INTERVAL)`,
  }
}

const POLL_MS = 1000

/**
 * Asks about every fault, again each second for those not caught yet, until all are or `waitSeconds` passed;
 * `progress` hears how many are caught after each round.
 */
export async function catchFaults(
  api: Api,
  devices: readonly FaultyDevice[],
  since: Since,
  thresholds: Thresholds,
  waitSeconds: number,
  progress: (caught: number, total: number) => void,
): Promise<Catch[]> {
  const until = Date.now() + waitSeconds * 1000
  const found: Array<Catch | undefined> = devices.map(() => undefined)
  for (;;) {
    await Promise.all(
      devices.map(async (d, i) => {
        if (!found[i]?.caught) found[i] = await ask(api, d, since, thresholds)
      }),
    )
    const caught = found.filter((c) => c!.caught).length
    progress(caught, devices.length)
    if (caught === devices.length || Date.now() + POLL_MS > until) {
      for (const c of found as Catch[]) {
        const need = READINGS_FOR[c.device.fault]
        if (!c.caught && c.device.readings < need)
          c.detail += `; the run had it send ${c.device.readings} of the ${need} readings its fault takes: run it longer`
      }
      return found as Catch[]
    }
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}
