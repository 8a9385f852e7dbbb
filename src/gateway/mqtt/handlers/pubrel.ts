import type { IPubrelPacket } from 'mqtt-packet'
import { ackPacket, reasonAck } from '../acks.js'
import { PacketType, ReasonCode } from '../codes.js'
import type { Connection } from '../connection.js'

/**
 * PUBREL releases a QoS 2 packet id: it is answered with PUBCOMP [MQTT-4.3.3-11] (v3.1.1: MQTT-4.3.3-2), and a
 * PUBLISH with that id is a new message again [MQTT-4.3.3-12]. v5 says 0x92 if the id was not in flight.
 */
export function handlePubrel(c: Connection, p: IPubrelPacket): void {
  const pid = p.messageId ?? 0
  const known = c.qos2?.delete(pid) ?? false
  c.write(
    c.version === 5 && !known
      ? reasonAck('pubcomp', pid, ReasonCode.packetIdentifierNotFound)
      : ackPacket(PacketType.pubcomp, pid),
  )
}
