/**
 * Finds MQTT packet boundaries before any parsing, so an oversize packet is refused from its fixed header
 * (no buffering of a payload we will not take) and only whole packets reach the shared parser.
 */

/**
 * Where `decodeVbi` leaves the integer it read: one object for the whole process, so the hot path allocates
 * nothing. Read it right after the call.
 */
export const vbi = { value: 0 }
/** `decodeVbi`: the bytes end before the integer does. */
export const VBI_SHORT = -1
/** `decodeVbi`: the fourth byte still has its continuation bit. */
export const VBI_MALFORMED = -2

/**
 * Decodes the Variable Byte Integer at `buf[pos]` (the Remaining Length of every fixed header, and v5's
 * property lengths and values): at most four bytes, the fourth without a continuation bit (§1.5.5; v3.1.1
 * §2.2.3). Returns the position after it, with the value in `vbi.value`, or VBI_SHORT / VBI_MALFORMED.
 */
export function decodeVbi(buf: Buffer, pos: number, end: number): number {
  let value = 0
  let mult = 1
  for (let k = 0; k < 4; k++) {
    if (pos >= end) return VBI_SHORT
    const b = buf[pos++]
    value += (b & 0x7f) * mult
    if ((b & 0x80) === 0) {
      vbi.value = value
      return pos
    }
    mult *= 128
  }
  return VBI_MALFORMED
}

export const FrameStatus = { ok: 0, tooLarge: 1, malformed: 2 } as const
export type FrameStatus = (typeof FrameStatus)[keyof typeof FrameStatus]

export interface FrameScan {
  /** Bytes from the start that form whole packets. */
  end: number
  /** Total size of the next, incomplete packet, or 0 if its header is not complete yet. */
  need: number
  status: FrameStatus
  /** With FrameStatus.tooLarge: the declared size and the packet type. */
  size: number
  type: number
}

/** Scans whole packets from `buf`, at most `maxPackets` of them, into `out`. */
export function scanFrames(
  buf: Buffer,
  maxPacketSize: number,
  maxPackets: number,
  out: FrameScan,
): FrameScan {
  let pos = 0
  let packets = 0
  out.status = FrameStatus.ok
  out.need = 0
  out.size = 0
  out.type = 0
  const n = buf.length
  while (pos < n && packets < maxPackets) {
    const body = decodeVbi(buf, pos + 1, n)
    if (body === VBI_SHORT) break
    if (body === VBI_MALFORMED) {
      out.status = FrameStatus.malformed
      out.end = pos
      return out
    }
    const total = body - pos + vbi.value
    if (total > maxPacketSize) {
      out.status = FrameStatus.tooLarge
      out.size = total
      out.type = buf[pos] >> 4
      out.end = pos
      return out
    }
    if (pos + total > n) {
      out.need = total
      break
    }
    pos += total
    packets++
  }
  out.end = pos
  return out
}
