/**
 * Downlink commands over MQTT: the gateway's CommandChannel. A command goes to a device as a PUBLISH on
 * `devices/<id>/commands`, `{id, name, params}` (CONTRACT.md), on a connection whose subscriptions match
 * that topic, at the QoS they were granted (at most 1); the device's PUBACK makes it delivered, and its answer
 * on `devices/<id>/commands/ack` replied. MQTT 5 clients also get Response Topic and Correlation Data.
 *
 * Spec references are to MQTT 5.0 unless marked v3.1.1.
 *
 * A command is not part of the MQTT session: one sent on a connection that closes before its PUBACK goes
 * back to the platform's queue (gateway/dispatch.ts) and out again on the device's next connection, as a new
 * PUBLISH with a new packet identifier and DUP 0, whatever the session. [MQTT-4.4.0-1] has a resumed session
 * resend with the original packet identifier; we do not, because the next connection may be another client
 * id, a clean session or another gateway process, and a QoS 1 receiver keeps nothing per packet identifier
 * anyway: after its PUBACK, the same identifier is a new message to it [MQTT-4.3.2-5] (v3.1.1: MQTT-4.3.2-2).
 * A device recognises a command it already ran by its `id`.
 */
import mqtt, { type IConnectPacket } from 'mqtt-packet'
import type { CommandChannel, CommandEvents, OutboundCommand } from '../commands.js'
import { ConnState } from './codes.js'
import type { Connection } from './connection.js'
import type { MqttGateway } from './gateway.js'
import { OutboundWindow } from './outbound.js'
import { type CommandAck, devicePrefix, filterMatches } from './topics.js'

/**
 * v3.1.1 has no Receive Maximum: commands a 3.1.1 client may have unacknowledged at once. A device runs its
 * commands one after another; a few in flight keep it busy without flooding a small one.
 */
export const V3_COMMAND_WINDOW = 10
/** §3.1.2.11.3: a v5 client that states no Receive Maximum takes 65,535. */
const DEFAULT_RECEIVE_MAXIMUM = 65_535

/** What only the dispatcher can record, whichever connection it comes from. */
export interface CommandOutcomes {
  /** A device answered command `id` on its ack topic (on any connection, after any reconnect). */
  reply(deviceId: string, id: string, status: 'ok' | 'error', result?: unknown): void
  /** It cannot be delivered: refused by the device's client, or too large for it. */
  refused(id: string, reason: string): void
}

interface Handed {
  cmd: OutboundCommand
  events: CommandEvents
}

/** One connection's downlink: made when it can take commands, or at CONNECT for a v5 client's limits. */
export class Downlink extends OutboundWindow<Handed> {
  /** QoS commands go at: the highest granted to the subscriptions matching the commands topic; -1: none. */
  qos = -1
}

/** A v5 client's Receive Maximum and Maximum Packet Size, kept from its CONNECT if it stated either. */
export function connectLimits(version: number, props: IConnectPacket['properties']): Downlink | null {
  if (version !== 5 || (props?.receiveMaximum === undefined && props?.maximumPacketSize === undefined))
    return null
  return new Downlink(props.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM, props.maximumPacketSize ?? 0)
}

/**
 * The MQTT gateway's CommandChannel. It knows which connections can take a device's commands (connected, with
 * a subscription matching `devices/<id>/commands`) and sends through the newest. A device that has not
 * subscribed gets none: a server sends a client only what matches its subscriptions (§3.3.4; v3.1.1 §3.3.5),
 * so its commands wait until it subscribes, which counts as its connect here.
 */
export class MqttCommands implements CommandChannel {
  readonly transport = 'mqtt' as const
  /** Set by the wiring: where answers and refusals go. Unset, they are logged and dropped. */
  outcomes: CommandOutcomes | undefined
  /** Connections that take commands, by device, newest last. */
  private readonly ready = new Map<string, Connection[]>()
  private readonly connectFns = new Set<(deviceId: string) => void>()

  constructor(private readonly gw: MqttGateway) {}

  send(cmd: OutboundCommand, events: CommandEvents): boolean {
    const conns = this.ready.get(cmd.deviceId)
    if (conns === undefined) return false
    const c = conns[conns.length - 1]
    this.push(c, c.downlink!, { cmd, events })
    return true
  }

  onConnect(fn: (deviceId: string) => void): () => void {
    this.connectFns.add(fn)
    return () => this.connectFns.delete(fn)
  }

  /**
   * Whether `c` takes commands, after its CONNACK and each SUBSCRIBE or UNSUBSCRIBE. A connection that starts
   * to is announced as a connect; one that stops gives back the commands waiting for room on it.
   */
  update(c: Connection): void {
    const qos = c.state === ConnState.connected ? commandsQos(c) : -1
    let d = c.downlink
    if (d === null) {
      if (qos < 0) return
      d = c.downlink = new Downlink(c.version === 5 ? DEFAULT_RECEIVE_MAXIMUM : V3_COMMAND_WINDOW, 0)
    }
    const was = d.qos
    d.qos = qos
    if (was < 0 && qos >= 0) {
      const conns = this.ready.get(c.deviceId)
      if (conns) conns.push(c)
      else this.ready.set(c.deviceId, [c])
      for (const fn of this.connectFns) fn(c.deviceId)
    } else if (was >= 0 && qos < 0) {
      this.unready(c)
      const waiting = d.waiting
      d.waiting = []
      for (const w of waiting) w.events.failed(w.cmd.id, 'the device unsubscribed from its commands')
    }
  }

  /** The connection closed: what it had not delivered goes back for the device's next connection. */
  closed(c: Connection): void {
    const d = c.downlink
    if (d === null) return
    if (d.qos >= 0) this.unready(c)
    const why = 'the connection closed before the device took it'
    for (const f of d.inflight.values()) f.events.failed(f.cmd.id, why)
    for (const w of d.waiting) w.events.failed(w.cmd.id, why)
    d.inflight.clear()
    d.waiting = []
  }

  /**
   * A PUBACK for a command: delivered, or with a v5 reason code of 0x80 or more, refused by the client; either
   * way its packet identifier is free and its slot of the Receive Maximum too [MQTT-3.3.4-9].
   */
  puback(c: Connection, pid: number, rc: number, reason: string | undefined): void {
    const d = c.downlink
    const f = d?.inflight.get(pid)
    if (d === null || f === undefined) {
      c.gw.log.debug({ deviceId: c.deviceId, pid }, 'PUBACK for no command in flight; ignored')
      return
    }
    d.inflight.delete(pid)
    if (rc >= 0x80) {
      const why = `the device's MQTT client refused it: PUBACK reason 0x${rc.toString(16)}`
      this.outcomes?.refused(f.cmd.id, reason ? `${why} (${reason})` : why)
    } else f.events.delivered(f.cmd.id)
    while (d.waiting.length > 0 && d.inflight.size < d.window && c.state === ConnState.connected)
      this.push(c, d, d.waiting.shift()!)
  }

  /**
   * A device's answer on `devices/<id>/commands/ack`: handed to the dispatcher, never stored as a reading.
   * Returns why it is malformed, if it is; it is then ignored (logged).
   */
  reply(c: Connection, payload: Buffer, correlationData: Buffer | undefined): string | undefined {
    const ack = parseAck(payload, correlationData)
    if (typeof ack === 'string') {
      c.gw.log.info({ deviceId: c.deviceId, why: ack }, 'malformed command answer ignored')
      return ack
    }
    if (this.outcomes) this.outcomes.reply(c.deviceId, ack.id, ack.status, ack.result)
    else c.gw.log.warn({ deviceId: c.deviceId, command: ack.id }, 'command answer dropped: no dispatcher')
    return undefined
  }

  /** Writes the command now if the client has room for it (its Receive Maximum), else keeps it waiting. */
  private push(c: Connection, d: Downlink, h: Handed): void {
    if (d.qos === 0) {
      // A QoS 0 subscription: [MQTT-3.8.4-8] (v3.1.1: MQTT-3.8.4-6) the command goes at QoS 0, and written
      // is as delivered as it gets: no acknowledgement will come.
      if (this.write(c, d, h.cmd, 0)) h.events.delivered(h.cmd.id)
      return
    }
    // [MQTT-3.3.4-9] no more unacknowledged QoS 1 PUBLISH packets than the client's Receive Maximum.
    if (d.inflight.size >= d.window) {
      d.waiting.push(h)
      return
    }
    const pid = d.nextPid()
    if (this.write(c, d, h.cmd, pid)) d.inflight.set(pid, h)
  }

  /** Writes the PUBLISH (`pid` 0: QoS 0); false if it was not written, as too large for the client. */
  private write(c: Connection, d: Downlink, cmd: OutboundCommand, pid: number): boolean {
    const packet = publishPacket(c, cmd, pid)
    if (d.maxPacketSize > 0 && packet.length > d.maxPacketSize) {
      // [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size is sent to it; [MQTT-3.1.2-25]
      // the message is dropped for it.
      const why = `its PUBLISH is ${packet.length} bytes, over the Maximum Packet Size of ${d.maxPacketSize} the device's MQTT client stated`
      this.outcomes?.refused(cmd.id, why)
      return false
    }
    c.write(packet)
    return true
  }

  private unready(c: Connection): void {
    const conns = this.ready.get(c.deviceId)
    if (conns === undefined) return
    const rest = conns.filter((x) => x !== c)
    if (rest.length > 0) this.ready.set(c.deviceId, rest)
    else this.ready.delete(c.deviceId)
  }
}

/**
 * The PUBLISH of a command: QoS 1 with packet identifier `pid`, or QoS 0 for pid 0; DUP 0 [MQTT-4.3.2-2] (and
 * see the file's comment), RETAIN 0 as for any message sent for a subscription (§3.3.1.3). v5: the Response
 * Topic where the device answers and the command id as Correlation Data (§4.10), which an MQTT 5 requester
 * pattern copies into its answer.
 */
function publishPacket(c: Connection, cmd: OutboundCommand, pid: number): Buffer {
  const prefix = devicePrefix(c.deviceId)
  const payload = JSON.stringify({ id: cmd.id, name: cmd.name, params: cmd.params ?? {} })
  return mqtt.generate(
    {
      cmd: 'publish',
      topic: `${prefix}commands`,
      payload,
      qos: pid === 0 ? 0 : 1,
      messageId: pid === 0 ? undefined : pid,
      dup: false,
      retain: false,
      properties:
        c.version === 5
          ? { responseTopic: `${prefix}commands/ack`, correlationData: Buffer.from(cmd.id) }
          : undefined,
    },
    { protocolVersion: c.version },
  )
}

/**
 * The highest QoS granted to a subscription of `c` that matches its commands topic: with overlapping ones the
 * message goes at the maximum [MQTT-3.3.4-2] (v3.1.1: MQTT-3.3.5-1); -1 if none matches.
 */
function commandsQos(c: Connection): number {
  if (c.subs === null) return -1
  const topic = `${devicePrefix(c.deviceId)}commands`
  let qos = -1
  for (const [filter, granted] of c.subs) if (granted > qos && filterMatches(filter, topic)) qos = granted
  return qos
}

/**
 * `{id, status: "ok"|"error", result?}` (CONTRACT.md); an MQTT 5 answer may leave `id` to its Correlation
 * Data, as the request-response pattern has it (§4.10). Returns why it is not one, if it is not.
 */
export function parseAck(payload: Buffer, correlationData: Buffer | undefined): CommandAck | string {
  let doc: unknown
  try {
    doc = JSON.parse(payload.toString('utf8'))
  } catch (err) {
    return `not JSON: ${(err as Error).message}`
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return 'not a JSON object: send {"id": "<command id>", "status": "ok" or "error", "result": ...}'
  const { id, status, result } = doc as Record<string, unknown>
  const cid = id ?? correlationData?.toString('utf8')
  if (typeof cid !== 'string' || cid === '') return 'id must be the command id, a string'
  if (status !== 'ok' && status !== 'error') return 'status must be "ok" or "error"'
  return result === undefined ? { id: cid, status } : { id: cid, status, result }
}
