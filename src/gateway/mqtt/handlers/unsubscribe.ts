import mqtt, { type IUnsubscribePacket } from 'mqtt-packet'
import { ReasonCode } from '../codes.js'
import type { Connection } from '../connection.js'

/**
 * UNSUBSCRIBE: the filters are matched exactly [MQTT-3.10.4-1] and answered with one UNSUBACK, even if none
 * was subscribed [MQTT-3.10.4-4/-5]; v5 says for each filter whether it was [MQTT-3.11.3-1/-2].
 */
export function handleUnsubscribe(c: Connection, p: IUnsubscribePacket): void {
  const codes: number[] = []
  for (const t of p.unsubscriptions) {
    codes.push(c.subs?.delete(t) ? ReasonCode.success : ReasonCode.noSubscriptionExisted)
  }
  c.saveSession()
  // mqtt-packet writes the codes only for v5.
  c.write(
    mqtt.generate(
      { cmd: 'unsuback', messageId: p.messageId, granted: codes },
      { protocolVersion: c.version },
    ),
  )
  c.gw.commands.update(c)
}
