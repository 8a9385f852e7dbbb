import mqtt, { type ISubscribePacket } from 'mqtt-packet'
import { ReasonCode, SUBACK_FAILURE_V3 } from '../codes.js'
import type { Connection } from '../connection.js'
import { operatorSubscriptionAllowed, subscriptionAllowed } from '../topics.js'

/**
 * SUBSCRIBE: a device may subscribe only under its own topics, an operator only under `$iotcore/alerts/`
 * (topics.ts). Each filter gets its own answer in one SUBACK [MQTT-3.8.4-1, MQTT-3.8.4-5/-6] (v3.1.1:
 * MQTT-3.8.4-1, MQTT-3.8.4-4/-5); a refused one 0x87 Not authorized in v5, 0x80 Failure in v3.1.1 (v3.1.1
 * §3.9.3). Commands and alert events are delivered at most at QoS 1.
 */
export function handleSubscribe(c: Connection, p: ISubscribePacket): void {
  const v5 = c.version === 5
  const granted: number[] = []
  for (const s of p.subscriptions) {
    const allowed =
      c.operator !== null ? operatorSubscriptionAllowed(s.topic) : subscriptionAllowed(c.deviceId, s.topic)
    if (allowed) {
      const qos = Math.min(s.qos, 1)
      ;(c.subs ??= new Map()).set(s.topic, qos)
      granted.push(qos)
    } else {
      c.gw.log.info({ deviceId: c.deviceId || undefined, filter: s.topic }, 'subscription refused')
      granted.push(v5 ? ReasonCode.notAuthorized : SUBACK_FAILURE_V3)
    }
  }
  c.saveSession()
  c.write(mqtt.generate({ cmd: 'suback', messageId: p.messageId, granted }, { protocolVersion: c.version }))
  // After the SUBACK: commands waiting for the device follow it.
  c.gw.commands.update(c)
}
