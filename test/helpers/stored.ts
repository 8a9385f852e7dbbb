/**
 * What a platform stored for a device, read where it is kept: the telemetry rows, the latest values and the
 * quarantine. For tests of what is acknowledged against what is stored.
 */
import { type Platform, type QuarantineItem, waitFor } from './index.js'

export interface Row {
  msgId: string
  ts: number
  values: Record<string, unknown>
}

/** Every telemetry row of the device, by msgId. */
export async function rows(p: Platform, deviceId: string): Promise<Row[]> {
  const r = await p.app.store.pool.query(
    `SELECT msg_id AS "msgId", (extract(epoch FROM ts) * 1000)::int8 AS ts, values
     FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1) ORDER BY msg_id`,
    [deviceId],
  )
  return r.rows
}

/** GET /devices/:id/latest's values. */
export async function latest(
  p: Platform,
  deviceId: string,
): Promise<Record<string, { ts: number; value: unknown }>> {
  const r = await p.req('GET', `/api/v1/devices/${deviceId}/latest`)
  if (r.status !== 200) throw new Error(`latest: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.values
}

/**
 * Once everything queued so far (readings and refusals alike) is through the ingest: what is not stored
 * then was not going to be.
 */
export async function drained(p: Platform): Promise<void> {
  await waitFor(
    () => p.app.queue.appending === 0 && p.app.queue.stats().depth === 0,
    20_000,
    'the queue to drain',
  )
}

/** The device's quarantine once drained, oldest first, as [reason, acked, payload] rows. */
export async function quarantined(p: Platform, deviceId: string): Promise<Array<[string, boolean, string]>> {
  await drained(p)
  const items: QuarantineItem[] = await p.quarantine(deviceId)
  return items.reverse().map((i) => [i.reason, i.acked, i.payload])
}
