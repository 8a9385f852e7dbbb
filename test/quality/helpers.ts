/** Quality-check tests at the store: readings built as the ingest builds them, written and judged in one batch. */
import { randomBytes } from 'node:crypto'
import { build } from '../../src/ingest/index.js'
import { createLogger } from '../../src/logger.js'
import { Quality, type QualityBatch, type QualityOptions } from '../../src/quality/index.js'
import type { Envelope } from '../../src/queue/types.js'
import type { Store, WriteResult } from '../../src/store/index.js'

export const OPTIONS: QualityOptions = {
  maxSpeedKmh: 300,
  maxReadingAgeSeconds: 0,
  deviceCheckViolations: 3,
  deviceCheckWindowSeconds: 3600,
  gapAlertAfterSeconds: 600,
}

export const quality = (o: Partial<QualityOptions> = {}) =>
  new Quality({ ...OPTIONS, ...o }, createLogger('silent'))

let envelopes = 0

/** One envelope of these readings (a JSON array) for the device, as a gateway would queue it. */
export function envelope(
  deviceId: string,
  readings: unknown[],
  receivedAt: number,
  allValid = false,
): Envelope {
  return {
    id: `q-${randomBytes(4).toString('hex')}-${envelopes++}`,
    deviceId,
    transport: 'http',
    receivedAt,
    payload: Buffer.from(JSON.stringify(readings)),
    allValid,
  }
}

/** Builds, writes and judges one batch of these envelopes, as the ingest does. */
export async function judged(
  store: Store,
  q: Quality,
  envs: Envelope[],
): Promise<{ result: WriteResult; judge: QualityBatch }> {
  const judge = q.batch()
  const { batch, quarantine } = build(envs, judge)
  const result = await store.writeBatch(batch, quarantine, judge)
  return { result, judge }
}

/** The device's stored readings by msgId: their flags, null when unflagged. */
export async function flagsOf(store: Store, deviceId: string): Promise<Record<string, string[] | null>> {
  const r = await store.pool.query(
    `SELECT msg_id, flags FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ORDER BY msg_id`,
    [deviceId],
  )
  return Object.fromEntries(r.rows.map((x) => [x.msg_id, x.flags]))
}

/** The flagged msgIds of the device, each with its flags joined: a compact thing to compare. */
export async function flagged(store: Store, deviceId: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const [m, f] of Object.entries(await flagsOf(store, deviceId))) if (f) out[m] = f.join(',')
  return out
}

/** The device's alerts wanted (device_alerts_due), by type. */
export async function due(
  store: Store,
  deviceId: string,
): Promise<
  Record<string, { active: boolean; severity: string; details: any; version: number; delivered: boolean }>
> {
  const r = await store.pool.query(
    `SELECT a.type, a.active, a.severity, a.details, a.version, a.delivered FROM device_alerts_due a
     JOIN devices d ON d.pk = a.device_pk WHERE d.id = $1`,
    [deviceId],
  )
  return Object.fromEntries(r.rows.map(({ type, ...rest }) => [type, rest]))
}

/** What the checks remember of the device. */
export async function stateOf(store: Store, deviceId: string): Promise<any> {
  const r = await store.pool.query('SELECT quality FROM devices WHERE id = $1', [deviceId])
  return r.rows[0]?.quality ?? undefined
}

let devices = 0

/** A new device in the store, with these attributes. */
export async function device(store: Store, attributes: Record<string, unknown> = {}): Promise<string> {
  const id = `qd${devices++}-${randomBytes(3).toString('hex')}`
  await store.devices.create({ id, name: id, tokenHash: `h-${id}`, attributes })
  return id
}
