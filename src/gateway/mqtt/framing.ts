/**
 * Finds MQTT packet boundaries before any parsing, so an oversize packet is refused from its fixed header
 * (no buffering of a payload we will not take) and only whole packets reach the shared parser.
 */
export const FRAME_OK = 0
export const FRAME_TOO_LARGE = 1
export const FRAME_MALFORMED = 2

export interface FrameScan {
  /** Bytes from the start that form whole packets. */
  end: number
  /** Total size of the next, incomplete packet, or 0 if its header is not complete yet. */
  need: number
  status: typeof FRAME_OK | typeof FRAME_TOO_LARGE | typeof FRAME_MALFORMED
  /** With FRAME_TOO_LARGE: the declared size and the packet type. */
  size: number
  type: number
}

/**
 * Scans whole packets from `buf`, at most `maxPackets` of them.
 * [MQTT-1.5.5] (v5: 1.5.5, v3.1.1: 2.2.3) the Remaining Length is at most four bytes, the fourth without
 * a continuation bit.
 */
export function scanFrames(
  buf: Buffer,
  maxPacketSize: number,
  maxPackets: number,
  out: FrameScan,
): FrameScan {
  let pos = 0
  let packets = 0
  out.status = FRAME_OK
  out.need = 0
  out.size = 0
  out.type = 0
  const n = buf.length
  while (pos < n && packets < maxPackets) {
    let len = 0
    let mult = 1
    let i = pos + 1
    let complete = false
    for (let k = 0; k < 4; k++, i++) {
      if (i >= n) break
      const b = buf[i]
      len += (b & 127) * mult
      mult *= 128
      if ((b & 128) === 0) {
        complete = true
        i++
        break
      }
      if (k === 3) {
        out.status = FRAME_MALFORMED
        out.end = pos
        return out
      }
    }
    if (!complete) break
    const total = i - pos + len
    if (total > maxPacketSize) {
      out.status = FRAME_TOO_LARGE
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
