/**
 * The operators' topic: every alert event (alert.opened, alert.acknowledged, alert.cleared) published on
 * `$iotcore/alerts/<alert type>` to the admin connections subscribed to it, on every gateway process. The
 * payload is the JSON a webhook receives: `{id, type, createdAt, data: {alert}}`, `id` the event id.
 *
 * An operator logs in with username `$admin` and the admin token as password (handlers/connect.ts). Like
 * Mosquitto's `$SYS/#`, the topics start with `$` so that a plain `#` does not match them [MQTT-4.7.2-1]; like
 * an EMQX or Mosquitto account whose ACL grants only reads, it may subscribe under `$iotcore/alerts/` and
 * publish nothing. `$admin` is no device id (the platform makes those: `d` and 15 letters or digits).
 *
 * Spec references are to MQTT 5.0 unless marked v3.1.1.
 *
 * The events come from the process's EventFeed, after their commit and in id order, and each connection gets
 * them in that order. Nothing is kept for an operator between connections (no session, no retained message):
 * what happened meanwhile is in GET /api/v1/alerts, or the SSE stream resumed with Last-Event-ID. A client
 * that does not keep up is disconnected, never waited for: past MAX_BACKLOG events unacknowledged or waiting,
 * or MAX_UNSENT_BYTES not taken by its socket.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import mqtt from 'mqtt-packet'
import type { Logger } from 'pino'
import type { EventFeed } from '../../store/event-feed.js'
import type { OutboxEvent } from '../../store/index.js'
import { ConnState, ReasonCode } from './codes.js'
import type { Connection } from './connection.js'
import { OutboundWindow } from './outbound.js'
import { OPERATOR_PREFIX, alertTopic, filterMatches } from './topics.js'

/** The username of an operator's CONNECT. */
export const OPERATOR_USERNAME = '$admin'
/** Events a connection may have unacknowledged (QoS 1) or waiting for room, past which it is disconnected. */
export const MAX_BACKLOG = 1000
/** Bytes written to a connection's socket and not yet taken by the client, past which it is disconnected. */
export const MAX_UNSENT_BYTES = 4 * 1024 * 1024
/** v3.1.1 has no Receive Maximum: QoS 1 events an operator may have unacknowledged at once. */
const V3_WINDOW = 100

interface Pending {
  topic: string
  payload: string
  qos: number
}

/** One operator connection's outbound state: its window of alert events. */
export class OperatorLink extends OutboundWindow<Pending> {}

/** The operators' topic of one gateway process: the admin login, and each event out to the subscribers. */
export class OperatorTopic {
  private readonly links = new Set<Connection>()
  private readonly passwordHash: Buffer
  private unfollow: (() => void) | undefined
  /** Operator connections cut for not keeping up, since the start (in /readyz). */
  private slow = 0

  constructor(
    private readonly feed: EventFeed,
    adminToken: string,
    private readonly log: Logger,
  ) {
    this.passwordHash = sha256(Buffer.from(adminToken))
  }

  async start(): Promise<void> {
    this.unfollow = this.feed.follow((e) => this.publish(e))
  }

  async stop(): Promise<void> {
    this.unfollow?.()
  }

  health(): { ok: true; connections: number; cutSlow: number } {
    return { ok: true, connections: this.links.size, cutSlow: this.slow }
  }

  /** Whether `password` is the admin token; compared in constant time (of equal-length digests). */
  passwordMatches(password: Buffer | undefined): boolean {
    return password !== undefined && timingSafeEqual(sha256(password), this.passwordHash)
  }

  /** `c` logged in as an operator, with its v5 Receive Maximum and Maximum Packet Size if it stated them. */
  attach(c: Connection, receiveMaximum: number | undefined, maxPacketSize: number | undefined): void {
    const window = Math.min(c.version === 5 ? (receiveMaximum ?? 65_535) : V3_WINDOW, MAX_BACKLOG)
    c.operator = new OperatorLink(window, maxPacketSize ?? 0)
    this.links.add(c)
  }

  closed(c: Connection): void {
    this.links.delete(c)
  }

  /** A PUBACK from an operator: frees its packet identifier and its slot of the Receive Maximum. */
  puback(c: Connection, pid: number): void {
    const link = c.operator!
    if (!link.inflight.delete(pid)) {
      this.log.debug({ pid }, 'operator PUBACK for no event in flight; ignored')
      return
    }
    this.drain(c, link)
  }

  /** One event to every operator connection whose subscriptions match its topic. */
  private publish(e: OutboxEvent): void {
    if (!e.type.startsWith('alert.') || this.links.size === 0) return
    const topic = alertTopic(String((e.data.alert as { type?: unknown } | undefined)?.type ?? 'unknown'))
    const { seq: _, ...event } = e
    const payload = JSON.stringify(event)
    for (const c of this.links) {
      if (c.state !== ConnState.connected) continue
      const qos = grantedQos(c, topic)
      if (qos < 0) continue
      const link = c.operator!
      link.waiting.push({ topic, payload, qos })
      if (link.inflight.size + link.waiting.length > MAX_BACKLOG) {
        this.cut(c, `more than ${MAX_BACKLOG} alert events unacknowledged`)
        continue
      }
      this.drain(c, link)
    }
  }

  /**
   * Writes the waiting events in order while the client has room for them: a QoS 0 one waits behind a QoS 1
   * one too, so that each connection gets the events in id order.
   */
  private drain(c: Connection, link: OperatorLink): void {
    while (link.waiting.length > 0 && c.state === ConnState.connected) {
      const next = link.waiting[0]
      // [MQTT-3.3.4-9] no more unacknowledged QoS 1 PUBLISH packets than the client's Receive Maximum.
      if (next.qos === 1 && link.inflight.size >= link.window) return
      link.waiting.shift()
      const pid = next.qos === 1 ? link.nextPid() : 0
      const packet = publishPacket(c.version, next, pid)
      if (link.maxPacketSize > 0 && packet.length > link.maxPacketSize) {
        // [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size is sent to it; [MQTT-3.1.2-25]
        // the message is dropped for it.
        this.log.warn(
          { topic: next.topic, bytes: packet.length },
          'alert event over the operator client limit',
        )
        continue
      }
      if (pid !== 0) link.inflight.set(pid, next)
      c.write(packet)
    }
    if (c.unsent > MAX_UNSENT_BYTES) this.cut(c, `more than ${MAX_UNSENT_BYTES} bytes of alert events unread`)
  }

  /**
   * A client that does not keep up is cut rather than waited for: v5 DISCONNECT 0x97 Quota exceeded, "an
   * implementation or administratively imposed limit has been exceeded" (§3.14.2.1).
   */
  private cut(c: Connection, why: string): void {
    this.slow++
    this.log.warn({ clientId: c.clientId, why }, 'operator connection cut: too slow')
    c.disconnect(ReasonCode.quotaExceeded, why)
  }
}

/**
 * An operator's PUBLISH that is not allowed (it may publish nothing): v5 QoS 1/2 gets PUBACK/PUBREC 0x87 Not
 * authorized and the connection stays; v3.1.1 has no negative ack and v5 QoS 0 no ack at all, so the
 * connection is closed (v3.1.1: MQTT-3.3.5-2). Nothing is quarantined: it is no device's data.
 */
export function refuseOperatorPublish(c: Connection, qos: number, pid: number, topic: string): void {
  const why = `an operator may only subscribe to ${OPERATOR_PREFIX}#, not publish`
  c.gw.log.info({ clientId: c.clientId, topic }, 'operator publish refused')
  if (c.version === 5 && qos > 0) {
    c.inflight--
    const cmd = qos === 1 ? 'puback' : 'pubrec'
    c.write(
      mqtt.generate(
        { cmd, messageId: pid, reasonCode: ReasonCode.notAuthorized, properties: { reasonString: why } },
        { protocolVersion: 5 },
      ),
    )
    return
  }
  c.protocolError(ReasonCode.notAuthorized, why)
}

/**
 * The PUBLISH of an event: QoS 1 with packet identifier `pid`, or QoS 0 for pid 0; DUP 0, RETAIN 0 as for any
 * message sent for a subscription (§3.3.1.3). v5 also says it is UTF-8 JSON (§3.3.2.3.2, §3.3.2.3.9).
 */
function publishPacket(version: number, e: Pending, pid: number): Buffer {
  return mqtt.generate(
    {
      cmd: 'publish',
      topic: e.topic,
      payload: e.payload,
      qos: pid === 0 ? 0 : 1,
      messageId: pid === 0 ? undefined : pid,
      dup: false,
      retain: false,
      properties:
        version === 5 ? { payloadFormatIndicator: true, contentType: 'application/json' } : undefined,
    },
    { protocolVersion: version },
  )
}

/**
 * The highest QoS granted to a subscription of `c` matching `topic`: with overlapping ones the message goes at
 * the maximum [MQTT-3.3.4-2] (v3.1.1: MQTT-3.3.5-1); -1 if none matches. Granted at most 1 (subscribe.ts).
 */
function grantedQos(c: Connection, topic: string): number {
  if (c.subs === null) return -1
  let qos = -1
  for (const [filter, granted] of c.subs) if (granted > qos && filterMatches(filter, topic)) qos = granted
  return qos
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest()
