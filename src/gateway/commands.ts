import type { Transport } from '../queue/types.js'

/** A downlink command as a gateway sends it to a device (the API stores it; a dispatcher hands it over). */
export interface OutboundCommand {
  /** The command's id (`cid`): carried to the device where the protocol can (MQTT), matched on reply. */
  id: string
  deviceId: string
  /** MQTT: the command's name; Teltonika: the Codec 12 text command (`getinfo`, `setdigout 1`). */
  name: string
  params?: unknown
}

/** What a gateway reports about a command it sent; the dispatcher records it in PostgreSQL. */
export interface CommandEvents {
  /** The device took it (MQTT PUBACK; Teltonika: the Codec 12 packet written to its socket). */
  delivered(id: string): void
  /** The device answered (MQTT `devices/<id>/commands/ack`; Teltonika: the Codec 12 response). */
  replied(id: string, status: 'ok' | 'error', result?: unknown): void
  /** The connection it was sent on closed before an answer: the dispatcher may send it again on the next. */
  failed(id: string, reason: string): void
}

/**
 * A gateway that can carry commands to its connected devices (MQTT, Teltonika). One dispatcher per process
 * calls send() for the devices connected here, and is told when a device connects so that its waiting
 * commands go out then.
 */
export interface CommandChannel {
  readonly transport: Transport
  /** Sends if the device is connected to this process; false otherwise (nothing was sent). */
  send(cmd: OutboundCommand, events: CommandEvents): boolean
  /** Calls `fn` whenever a device completes its connection here; returns a function that stops it. */
  onConnect(fn: (deviceId: string) => void): () => void
}
