import type { IDisconnectPacket } from 'mqtt-packet'
import { ReasonCode } from '../codes.js'
import type { Connection } from '../connection.js'

/**
 * A DISCONNECT from the client: the connection ends, and its will with it [MQTT-3.14.4-3], unless a v5 client
 * asks for the will with reason 0x04 (§3.14.2.1).
 */
export function handleDisconnect(c: Connection, p: IDisconnectPacket): void {
  if (!(c.version === 5 && p.reasonCode === ReasonCode.disconnectWithWill)) c.will = null
  c.close('client disconnected', true)
}
