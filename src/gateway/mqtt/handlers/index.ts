import type { Packet } from 'mqtt-packet'
import { ConnState, ReasonCode } from '../codes.js'
import type { Connection } from '../connection.js'
import { handleConnect } from './connect.js'
import { handleDisconnect } from './disconnect.js'
import { handlePing } from './ping.js'
import { handlePuback } from './puback.js'
import { handlePubrel } from './pubrel.js'
import { handlePublish } from './publish.js'
import { handleSubscribe } from './subscribe.js'
import { handleUnsubscribe } from './unsubscribe.js'

/**
 * Hands a packet mqtt-packet parsed to the handler of its type. (The common PUBLISH skips the parser and
 * comes to handlePublish from the fast path.) Every packet was checked on its bytes before it was parsed.
 */
export function handlePacket(c: Connection, p: Packet): void {
  if (c.state === ConnState.closed) return
  // [MQTT-3.1.0-1] the first packet from the client must be CONNECT.
  if (c.state === ConnState.new)
    return p.cmd === 'connect' ? handleConnect(c, p) : c.close(`first packet was ${p.cmd}, not connect`)
  switch (p.cmd) {
    case 'publish':
      return handlePublish(c, p)
    case 'pingreq':
      return handlePing(c)
    case 'pubrel':
      return handlePubrel(c, p)
    case 'puback':
      return handlePuback(c, p)
    case 'pubrec':
    case 'pubcomp':
      // Acks of QoS 2, which the gateway never sends (commands go at QoS 1 at most): nothing to do.
      return
    case 'subscribe':
      return handleSubscribe(c, p)
    case 'unsubscribe':
      return handleUnsubscribe(c, p)
    case 'disconnect':
      return handleDisconnect(c, p)
    case 'connect':
      // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
      return c.protocolError(ReasonCode.protocolError, 'second CONNECT')
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP and AUTH are never sent by a client to us.
      return c.protocolError(ReasonCode.protocolError, `unexpected ${p.cmd} packet`)
  }
}
