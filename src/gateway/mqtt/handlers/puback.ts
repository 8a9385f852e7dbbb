import type { IPubackPacket } from 'mqtt-packet'
import type { Connection } from '../connection.js'

/**
 * PUBACK from the client: the acknowledgement of a command the gateway sent at QoS 1 (downlink.ts), or of an
 * alert event sent to an operator (operators.ts), which
 * frees its packet identifier [MQTT-4.3.2-3] (v3.1.1: MQTT-4.3.2-1). Checked on its bytes first (validate.ts:
 * length, identifier, v5 reason code and properties).
 */
export function handlePuback(c: Connection, p: IPubackPacket): void {
  if (c.operator !== null) return c.gw.operators!.puback(c, p.messageId ?? 0)
  c.gw.commands.puback(c, p.messageId ?? 0, p.reasonCode ?? 0, p.properties?.reasonString)
}
