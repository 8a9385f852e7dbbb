import { PacketType } from '../codes.js'
import type { Connection } from '../connection.js'

const PINGRESP = Buffer.from([PacketType.pingresp << 4, 0x00])

/** [MQTT-3.12.4-1] a PINGREQ is answered with PINGRESP. Keep Alive counts any packet (connection.ts). */
export function handlePing(c: Connection): void {
  c.write(PINGRESP)
}
