import type { IPublishPacket } from 'mqtt-packet'
import { IotError } from '../../../errors.js'
import type { AckSink, Envelope } from '../../../queue/types.js'
import { type QuarantineReason, judgePayload } from '../../../readings/index.js'
import { envelopeId, quarantineRefused } from '../../accept.js'
import { TOKEN_QOS2, ackPacket, reasonAck } from '../acks.js'
import { ConnState, PacketType, ReasonCode } from '../codes.js'
import { type Connection, V3_INFLIGHT_PAUSE } from '../connection.js'
import { refuseOperatorPublish } from '../operators.js'
import { ResendWindow } from '../resends.js'
import { classifyPublish, devicePrefix } from '../topics.js'

/**
 * A PUBLISH from a device: its own telemetry topic only, judged, appended to the durable queue, and acked once
 * the append is durable (connection.ts, the queue's AckSink). Called for every PUBLISH: no closure or promise
 * per message; the payload stays a view of the bytes read.
 */
export function handlePublish(c: Connection, p: IPublishPacket): void {
  const v5 = c.version === 5
  const qos = p.qos
  const pid = p.messageId ?? 0
  // [MQTT-3.2.2-18] we announced Topic Alias Maximum 0: any alias is invalid (v5 §3.3.2.3.4: 0x94).
  if (v5 && p.properties?.topicAlias !== undefined)
    return c.protocolError(ReasonCode.topicAliasInvalid, 'topic aliases are not supported')
  // Retain Available is 0 in our CONNACK [MQTT-3.2.2-14]: a retained publish is answered with DISCONNECT
  // 0x9A (v5 §3.3.1.3). v3.1.1 has no way to say it; the gateway stores the message, retaining nothing.
  if (v5 && p.retain) return c.protocolError(ReasonCode.retainNotSupported, 'retain is not supported')
  if (qos === 2 && c.qos2?.has(pid)) {
    // [MQTT-4.3.3-10] (v3.1.1: MQTT-4.3.3-2) a QoS 2 PUBLISH resent before its PUBREL is the same message:
    // PUBREC again, store once.
    return c.write(ackPacket(PacketType.pubrec, pid))
  }
  if (qos > 0) {
    c.inflight++
    // [MQTT-3.3.4-7] v5: more unacknowledged publishes than our Receive Maximum is a protocol error (0x93).
    if (v5 && c.inflight > c.gw.opts.receiveMaximum)
      return c.protocolError(ReasonCode.receiveMaximumExceeded, 'receive maximum exceeded')
    if (!v5 && c.inflight >= V3_INFLIGHT_PAUSE) c.pause()
  }
  const topic = p.topic
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload
  if (topic !== c.telemetryTopic) {
    if (c.operator !== null) return refuseOperatorPublish(c, qos, pid, topic)
    const kind = classifyPublish(c.deviceId, topic)
    if (kind === 'commands/ack') return commandAnswer(c, p, qos, pid, payload)
    const forbidden = kind === 'forbidden'
    const detail = forbidden
      ? `device ${c.deviceId} may only publish under ${devicePrefix(c.deviceId)}`
      : `unknown topic ${topic}; telemetry goes to ${c.telemetryTopic}`
    const reason: QuarantineReason = forbidden ? 'forbidden_topic' : 'unknown_topic'
    const rc = forbidden ? ReasonCode.notAuthorized : ReasonCode.topicNameInvalid
    return refusePublish(c, qos, pid, topic, payload, reason, detail, rc)
  }
  let token = pid
  if (qos === 2) token |= TOKEN_QOS2
  const sink = qos === 0 ? c.gw.qos0Sink(c.transport) : c
  deliver(c, topic, payload, qos, pid, sink, token, qos === 0 ? Date.now() : stamp(c, p.dup, pid, payload))
}

/**
 * The receive stamp of a QoS 1/2 publish: a DUP resend of one in the session's window gets the first copy's,
 * so readings whose id derives from it (no `msgId`, no `ts`) dedup (resends.ts); any other, the time now.
 */
function stamp(c: Connection, dup: boolean, pid: number, payload: Buffer): number {
  const again = dup && c.resends !== null ? c.resends.stampOf(pid, payload.length) : undefined
  const at = again ?? Date.now()
  ;(c.resends ??= new ResendWindow(c.gw.opts.receiveMaximum)).remember(pid, payload.length, at)
  return at
}

/**
 * The will, when the connection closed without a normal DISCONNECT [MQTT-3.1.2-8]: into the queue the same way
 * as a PUBLISH. Nothing can be acked on a closed connection, so it goes as QoS 0 does. Its topic was checked at
 * CONNECT: the device's telemetry topic.
 */
export function deliverWill(c: Connection): void {
  const will = c.will!
  c.will = null
  const payload = typeof will.payload === 'string' ? Buffer.from(will.payload) : will.payload
  deliver(c, will.topic, payload, 0, 0, c.gw.qos0Sink(c.transport), 0, Date.now())
}

/** The one path into the queue, for a PUBLISH and for the will. */
function deliver(
  c: Connection,
  topic: string,
  payload: Buffer,
  qos: number,
  pid: number,
  sink: AckSink,
  token: number,
  receivedAt: number,
): void {
  const parsed = judgePayload(payload)
  const count = parsed.valid + parsed.rejections.length
  c.gw.countReceived(c.transport, count)
  if (c.version === 5 && qos > 0 && parsed.valid === 0) {
    // Nothing in it can be stored: refused like HTTP's 400, with 0x99 Payload format invalid, and kept in the
    // quarantine as not acknowledged. A payload with some valid readings is accepted (success ack), its bad
    // readings quarantined, as HTTP answers 202: a 0x99 would tell the device nothing was taken.
    const first = parsed.rejections[0]
    return refusePublish(
      c,
      qos,
      pid,
      topic,
      payload,
      first.reason,
      first.detail,
      ReasonCode.payloadFormatInvalid,
    )
  }
  if (parsed.rejections.length > 0) {
    const { reason, detail } = parsed.rejections[0]
    c.gw.log.info({ deviceId: c.deviceId, reason, detail }, 'invalid readings quarantined')
  }
  const env: Envelope = {
    id: envelopeId('m'),
    deviceId: c.deviceId,
    transport: c.transport,
    topic,
    receivedAt,
    payload,
  }
  if (parsed.rejections.length === 0) env.allValid = true
  try {
    c.gw.queue.enqueue(env, sink, token, count)
  } catch (err) {
    // Never accept what we cannot keep. v5 DISCONNECT (§3.14.2.1): 0x97 Quota exceeded when the disk budget
    // is spent, 0x89 Server busy when the queue is unreachable.
    const full = err instanceof IotError && err.code === 'IOT_ERR_QUEUE_FULL'
    const will = c.state === ConnState.closed
    c.gw.log.warn(
      { deviceId: c.deviceId, err: (err as Error).message },
      will ? 'will message dropped: the queue refused it' : 'the queue refused the publish; disconnecting',
    )
    c.disconnect(full ? ReasonCode.quotaExceeded : ReasonCode.serverBusy, (err as Error).message)
  }
}

/**
 * A device's answer to a command, on `devices/<id>/commands/ack`: handed to the commands dispatcher
 * (downlink.ts), not queued as a reading. Acknowledged at once, as a refusal is: like one, its PUBACK may pass
 * those of earlier readings still being made durable, where [MQTT-4.6.0-2] asks for the publishes' order. A
 * malformed one is ignored (logged), and v5 says why with PUBACK/PUBREC 0x99 Payload format invalid, which
 * ends a QoS 2 exchange [MQTT-4.3.3-9]. A QoS 2 answer resent before its PUBREL was answered above, and is not
 * handed over twice.
 */
function commandAnswer(c: Connection, p: IPublishPacket, qos: number, pid: number, payload: Buffer): void {
  const malformed = c.gw.commands.reply(c, payload, p.properties?.correlationData)
  if (qos === 0) return
  c.inflight--
  const type = qos === 1 ? 'puback' : 'pubrec'
  if (malformed !== undefined && c.version === 5)
    return c.write(reasonAck(type, pid, ReasonCode.payloadFormatInvalid, malformed.slice(0, 200)))
  if (qos === 2) (c.qos2 ??= new Set()).add(pid)
  c.write(ackPacket(qos === 1 ? PacketType.puback : PacketType.pubrec, pid))
}

function refusePublish(
  c: Connection,
  qos: number,
  pid: number,
  topic: string,
  payload: Buffer,
  reason: QuarantineReason,
  detail: string,
  rc: number,
): void {
  c.gw.log.info({ deviceId: c.deviceId, topic, reason }, 'publish refused')
  quarantineRefused(c.gw.queue, c.gw.metrics, c.deviceId, c.transport, payload, reason, detail, topic)
  if (c.version === 5 && qos > 0) {
    // v5 can refuse one message and keep the connection: PUBACK/PUBREC with the reason. A PUBREC of 0x80 or
    // more ends the exchange: the id is free again [MQTT-4.3.3-9].
    c.inflight--
    return c.write(reasonAck(qos === 1 ? 'puback' : 'pubrec', pid, rc, detail))
  }
  // v3.1.1 has no negative ack, and acking would claim a message we did not take: close instead (v3.1.1:
  // MQTT-3.3.5-2). v5 QoS 0 has no ack to say it with either.
  c.protocolError(rc, detail)
}

/**
 * A packet over our Maximum Packet Size, refused from its fixed header before its bytes are read: v5
 * DISCONNECT 0x95 [MQTT-3.2.2-15] (§3.2.2.3.6), then close. A PUBLISH is kept in the quarantine as refused,
 * without its payload.
 */
export function refuseTooLarge(c: Connection, size: number, type: number): void {
  const detail = `packet of ${size} bytes; the limit is ${c.gw.maxPacketSize}`
  if (c.state === ConnState.connected && type === PacketType.publish) {
    const empty = Buffer.alloc(0)
    quarantineRefused(c.gw.queue, c.gw.metrics, c.deviceId, c.transport, empty, 'payload_too_large', detail)
  }
  c.gw.log.info({ deviceId: c.deviceId || undefined, size }, 'packet too large')
  c.protocolError(ReasonCode.packetTooLarge, detail)
}
