/**
 * Acknowledgement bytes, built in one place. A success PUBACK/PUBREC/PUBCOMP is four bytes in both versions
 * (§3.4.2.1: with Success and no properties the reason code may be left out), so the acks of a whole durable
 * commit are written as one buffer. Acks with a v5 reason code are rare (a refused message) and go through
 * mqtt-packet.
 */
import mqtt from 'mqtt-packet'
import type { Metrics } from '../../metrics/index.js'
import type { AckSink, Transport } from '../../queue/types.js'
import { PacketType } from './codes.js'

/**
 * The queue hands a connection back one number per message: the packet id in the low 16 bits, and this bit for
 * a QoS 2 PUBLISH, answered with PUBREC instead of PUBACK.
 */
export const TOKEN_QOS2 = 1 << 16

const PUBACK = PacketType.puback << 4
const PUBREC = PacketType.pubrec << 4

function put(buf: Buffer, at: number, first: number, pid: number): void {
  buf[at] = first
  buf[at + 1] = 0x02
  buf[at + 2] = (pid >> 8) & 0xff
  buf[at + 3] = pid & 0xff
}

/** A success ack of `type` (PUBACK, PUBREC or PUBCOMP) for packet id `pid`. */
export function ackPacket(type: PacketType, pid: number): Buffer {
  const buf = Buffer.allocUnsafe(4)
  put(buf, 0, type << 4, pid)
  return buf
}

/** The success acks for the queue's tokens, in order, in one buffer: PUBACK, or PUBREC for QoS 2. */
export function ackTokens(tokens: readonly number[]): Buffer {
  const buf = Buffer.allocUnsafe(tokens.length * 4)
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]
    put(buf, i * 4, t & TOKEN_QOS2 ? PUBREC : PUBACK, t)
  }
  return buf
}

/** The ack for one token. */
export const ackToken = (token: number): Buffer =>
  ackPacket(token & TOKEN_QOS2 ? PacketType.pubrec : PacketType.puback, token & 0xffff)

/** A v5 PUBACK, PUBREC or PUBCOMP with a reason code other than Success, and optionally the reason. */
export function reasonAck(
  type: 'puback' | 'pubrec' | 'pubcomp',
  pid: number,
  rc: number,
  reason?: string,
): Buffer {
  return mqtt.generate(
    { cmd: type, messageId: pid, reasonCode: rc, properties: reason ? { reasonString: reason } : undefined },
    { protocolVersion: 5 },
  )
}

/** QoS 0: nothing to acknowledge, but the readings still count as accepted once durable. */
export class MetricsSink implements AckSink {
  private n = 0
  constructor(
    private readonly metrics: Metrics,
    private readonly transport: Transport,
  ) {}
  cork(): void {}
  ack(_t: number, count: number, err: Error | undefined): void {
    if (!err) this.n += count
  }
  uncork(): void {
    if (this.n > 0) this.metrics.acked.inc({ transport: this.transport }, this.n)
    this.n = 0
  }
}
