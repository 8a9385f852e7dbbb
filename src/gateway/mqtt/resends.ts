/**
 * The receive stamps of a session's latest QoS 1 and 2 publishes, by packet id, so that a resend gets the same
 * stamp as the first copy. A reading without `msgId` or `ts` gets its id derived from that stamp: a resend
 * stamped anew would be stored a second time.
 *
 * A sender sets DUP on a PUBLISH it sends again [MQTT-3.3.1-1] (v3.1.1: MQTT-3.3.1-1), with the same packet
 * id, and a packet id is not reused before the first message was acknowledged [MQTT-2.2.1-3] (v3.1.1:
 * MQTT-2.3.1-2). It resends on reconnecting to a session that was kept [MQTT-4.4.0-1] (v3.1.1: MQTT-4.4.0-1);
 * a v3.1.1 client may also resend on the same connection (v3.1.1 §4.4, non-normative). So a DUP PUBLISH whose
 * packet id and length match the newest remembered one is that message again.
 *
 * The sender cannot have more publishes unacknowledged than its window: in v5 our Receive Maximum
 * [MQTT-3.3.4-7]. What it resends after a lost connection is among its latest publishes, so the window holds
 * only that many, the oldest overwritten first. Kept small: one Float64Array, two numbers per publish, made on
 * the first QoS 1/2 publish and grown as it fills.
 */

/** Slots of the first array; it doubles up to the capacity. */
const FIRST_SLOTS = 8
/** The packet id and the payload length share a slot: pid * 2^32 + length, exact in a double (< 2^48). */
const PID_SHIFT = 2 ** 32

export class ResendWindow {
  /** Per publish, two numbers: its receive stamp, then pid * 2^32 + payload length. A ring of `size`. */
  private slots: Float64Array
  private size = 0
  /** Index (in publishes) where the next one is written. */
  private head = 0

  constructor(
    /** At most this many publishes are remembered. */
    readonly capacity: number,
  ) {
    this.slots = new Float64Array(2 * Math.min(FIRST_SLOTS, capacity))
  }

  /** Remembers that publish `pid` with a payload of `length` bytes was stamped `stamp`. */
  remember(pid: number, length: number, stamp: number): void {
    let room = this.slots.length / 2
    if (this.size === room && room < this.capacity) {
      // Full and allowed to grow: unroll the ring into a larger array, oldest first.
      const grown = new Float64Array(2 * Math.min(room * 2, this.capacity))
      grown.set(this.slots.subarray(2 * this.head))
      grown.set(this.slots.subarray(0, 2 * this.head), this.slots.length - 2 * this.head)
      this.slots = grown
      this.head = this.size
      room = grown.length / 2
    }
    this.slots[2 * this.head] = stamp
    this.slots[2 * this.head + 1] = pid * PID_SHIFT + length
    this.head = (this.head + 1) % room
    if (this.size < room) this.size++
  }

  /**
   * The stamp of the newest remembered publish with this packet id, if its payload had this length: what a DUP
   * resend of it is stamped with. Undefined if none: the first copy is too old, or came before a restart.
   */
  stampOf(pid: number, length: number): number | undefined {
    const room = this.slots.length / 2
    const key = pid * PID_SHIFT + length
    for (let i = 1; i <= this.size; i++) {
      const at = (this.head - i + room) % room
      const k = this.slots[2 * at + 1]
      if (Math.floor(k / PID_SHIFT) !== pid) continue
      // The newest copy of this packet id decides: an older one with the same id was acknowledged and reused.
      return k === key ? this.slots[2 * at] : undefined
    }
    return undefined
  }
}
