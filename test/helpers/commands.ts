/** Commands through the admin API, as the tests of their delivery (MQTT, the dispatcher) queue and follow them. */
import type { Platform } from './index.js'

/** Queues a command: the 201 answer's body (the command), or a throw naming the status. */
export async function sendCommand(
  p: Platform,
  deviceId: string,
  body: Record<string, unknown>,
): Promise<any> {
  const r = await p.req('POST', `/api/v1/devices/${deviceId}/commands`, body)
  if (r.status !== 201) throw new Error(`command: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

/** A command as GET /devices/:id/commands/:cid shows it. */
export async function command(p: Platform, deviceId: string, id: string): Promise<any> {
  const r = await p.req('GET', `/api/v1/devices/${deviceId}/commands/${id}`)
  if (r.status !== 200) throw new Error(`command query: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}
