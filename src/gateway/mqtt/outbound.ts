/**
 * A connection's server-to-client QoS 1 window, shared by the device's downlink commands (downlink.ts) and the
 * operators' alert events (operators.ts): what is written and not yet acknowledged, by packet identifier, and
 * what waits behind the client's Receive Maximum, in order.
 */
export class OutboundWindow<T> {
  private lastPid = 0
  /** QoS 1 PUBLISH packets written and not yet acknowledged (PUBACK), by packet identifier. */
  readonly inflight = new Map<number, T>()
  /** Handed over beyond the window, sent as acknowledgements free room. */
  waiting: T[] = []

  constructor(
    /** Unacknowledged QoS 1 PUBLISH packets the client takes at once [MQTT-3.3.4-9]. */
    readonly window: number,
    /** The client's Maximum Packet Size; 0: none stated. */
    readonly maxPacketSize: number,
  ) {}

  /**
   * [MQTT-2.2.1-4] (v3.1.1: MQTT-2.3.1-1) a new QoS 1 PUBLISH from the server gets a non-zero packet
   * identifier not in use. The server's identifiers are its own, apart from the client's (§2.2.1), so only
   * this connection's packets in flight can collide; they are fewer than the window, at most 65,535.
   */
  nextPid(): number {
    do this.lastPid = this.lastPid === 0xffff ? 1 : this.lastPid + 1
    while (this.inflight.has(this.lastPid))
    return this.lastPid
  }
}
