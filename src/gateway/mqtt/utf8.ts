/**
 * UTF-8 Encoded Strings on the wire (§1.5.4; v3.1.1 §1.5.3): a two-byte length, then the bytes, checked where
 * they lie. mqtt-packet decodes ill-formed UTF-8 into U+FFFD, so every string a client sends is checked here
 * before it is parsed.
 */

/**
 * What `utf8Fault` found, worst first.
 * - illFormed: must not be taken: ill-formed UTF-8 (surrogates, overlongs, code points past U+10FFFF)
 *   [MQTT-1.5.4-1] or U+0000 [MQTT-1.5.4-2] (v3.1.1: MQTT-1.5.3-1/-2, where the receiver closes the connection).
 * - discouraged: well-formed, but control characters (U+0001-U+001F, U+007F-U+009F) or non-characters, which a
 *   receiver may treat as malformed (§1.5.4; v3.1.1 §1.5.3: may close). None belongs in a topic or a name,
 *   and Mosquitto refuses them too.
 */
export const Utf8 = { ok: 0, illFormed: 1, discouraged: 2 } as const
export type Utf8 = (typeof Utf8)[keyof typeof Utf8]

/** Checks `buf[from, to)`: Utf8.ok, or the worst fault in it. */
export function utf8Fault(buf: Buffer, from: number, to: number): Utf8 {
  let found: Utf8 = Utf8.ok
  let i = from
  while (i < to) {
    const b = buf[i]
    if (b < 0x80) {
      if (b < 0x20 || b === 0x7f) {
        if (b === 0) return Utf8.illFormed
        found = Utf8.discouraged
      }
      i++
      continue
    }
    let n: number
    let cp: number
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1
      cp = b & 0x1f
    } else if ((b & 0xf0) === 0xe0) {
      n = 2
      cp = b & 0x0f
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3
      cp = b & 0x07
    } else {
      return Utf8.illFormed
    }
    if (i + n >= to) return Utf8.illFormed
    for (let k = 1; k <= n; k++) {
      const c = buf[i + k]
      if ((c & 0xc0) !== 0x80) return Utf8.illFormed
      cp = (cp << 6) | (c & 0x3f)
    }
    if (n === 2 && cp < 0x800) return Utf8.illFormed
    if (n === 3 && (cp < 0x10000 || cp > 0x10ffff)) return Utf8.illFormed
    if (cp >= 0xd800 && cp <= 0xdfff) return Utf8.illFormed
    if (cp <= 0x9f || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) found = Utf8.discouraged
    i += n + 1
  }
  return found
}

/** True if `buf[from, to)` is a UTF-8 string the gateway takes: well-formed and nothing discouraged in it. */
export function validUtf8(buf: Buffer, from: number, to: number): boolean {
  return utf8Fault(buf, from, to) === Utf8.ok
}

/** End of the length-prefixed string (or binary data) at `pos`, or -1 if it runs past `end` (§1.5.4, §1.5.6). */
export function stringEnd(buf: Buffer, pos: number, end: number): number {
  if (pos + 2 > end) return -1
  const e = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
  return e > end ? -1 : e
}
