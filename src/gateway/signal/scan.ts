/**
 * Where the founders' signal ends. The sender writes one JSON object and waits for the `1` before it closes,
 * so the end of the stream cannot be the end of the signal (each side would wait for the other): the object's
 * own closing brace is. This scan follows the bytes as JSON's grammar nests them (RFC 8259 §2: objects and
 * arrays nest, strings hold any byte but an unescaped quote, §7: a backslash escapes the next character), so a
 * brace inside a string does not count, and it finds the end in any split of the stream into chunks. It does
 * not validate: a text it ends is then parsed, and refused if it is not JSON.
 */

/** `feed` results besides an offset: the object is not complete yet, or never will be. */
export const NEED_MORE = -1
export const NOT_AN_OBJECT = -2
export const TOO_LARGE = -3

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d

export class ObjectEnd {
  private depth = 0
  private inString = false
  private escaped = false
  private started = false
  /** Bytes scanned in the chunks before this one. */
  private seen = 0

  /** `max`: the longest signal, leading whitespace included. */
  constructor(readonly max: number) {}

  /** Whether the object has begun (its `{` was read): a stream that ends then ended inside it. */
  get begun(): boolean {
    return this.started
  }

  /**
   * Scans the next chunk of the stream. Returns the offset in `chunk` just past the object's closing brace, or
   * NEED_MORE, NOT_AN_OBJECT (the stream does not start with `{` after whitespace), TOO_LARGE (more than
   * `max` bytes without the end). Once it returned an end or a refusal, it is not to be fed again.
   */
  feed(chunk: Buffer): number {
    const n = chunk.length
    // Never past `max` in all: a huge chunk is refused without being scanned to its end.
    const stop = Math.min(n, this.max - this.seen)
    for (let i = 0; i < stop; i++) {
      const b = chunk[i]
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (b === BACKSLASH) this.escaped = true
        else if (b === QUOTE) this.inString = false
      } else if (!this.started) {
        // RFC 8259 §2: insignificant whitespace is space, tab, LF, CR.
        if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue
        if (b !== OPEN_BRACE) return NOT_AN_OBJECT
        this.started = true
        this.depth = 1
      } else if (b === QUOTE) this.inString = true
      else if (b === OPEN_BRACE || b === OPEN_BRACKET) this.depth++
      else if ((b === CLOSE_BRACE || b === CLOSE_BRACKET) && --this.depth === 0) return i + 1
    }
    if (stop < n) return TOO_LARGE
    this.seen += n
    return NEED_MORE
  }
}
