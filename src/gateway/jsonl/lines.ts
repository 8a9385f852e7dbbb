/**
 * The JSON-lines framing: a byte stream of lines, each ended by LF (a CR before it is dropped, for senders that
 * end lines with CRLF), each one JSON text. The first line authenticates; every other one is a reading or an
 * array of readings (CONTRACT.md, "Device ports").
 */

/** What `next` returns for a line longer than the limit: the framing cannot go on past it. */
export const TOO_LONG = Symbol('too long')

const LF = 0x0a
const CR = 0x0d
const EMPTY = Buffer.alloc(0)

/**
 * Splits the bytes fed to it into lines of at most `max` bytes (without the line end). Pull-based, so its owner
 * may stop taking lines at any one (while it authenticates, while too many are in flight) and take the rest
 * later. Holds at most one chunk being read and the start of one incomplete line; a line within one chunk is
 * handed out as a view of it, without a copy.
 */
export class LineReader {
  private chunk: Buffer = EMPTY
  private pos = 0
  /** The start of an incomplete line (copies: a view would pin the socket's read buffer). */
  private head: Buffer[] = []
  private headBytes = 0
  /** When the incomplete line began (the time of the feed that brought its first byte), or 0 with none. */
  since = 0
  private fedAt = 0

  constructor(readonly max: number) {}

  /** Bytes held: a chunk not read to its end, and the start of an incomplete line. */
  get held(): number {
    return this.chunk.length - this.pos + this.headBytes
  }

  /** Adds bytes; take the lines with `next` until it returns null before feeding more. */
  feed(chunk: Buffer, now: number): void {
    // Fed before the last chunk was read out (its owner paused on a line): that rest comes first.
    this.chunk = this.pos < this.chunk.length ? Buffer.concat([this.chunk.subarray(this.pos), chunk]) : chunk
    this.pos = 0
    this.fedAt = now
  }

  /**
   * At the end of the stream: the incomplete line held, as the last line (a sender may leave out the last line
   * end), or null. Call once `next` returned null.
   */
  end(): Buffer | null | typeof TOO_LONG {
    if (this.headBytes === 0) return null
    let line = Buffer.concat(this.head, this.headBytes)
    this.head = []
    this.headBytes = 0
    this.since = 0
    if (line[line.length - 1] === CR) line = line.subarray(0, line.length - 1)
    return line.length > this.max ? this.fail() : line
  }

  /** The next whole line, without its line end; null until more is fed; TOO_LONG once a line passes `max`. */
  next(): Buffer | null | typeof TOO_LONG {
    const chunk = this.chunk
    const start = this.pos
    if (start >= chunk.length) return null
    const nl = chunk.indexOf(LF, start)
    if (nl < 0) {
      this.chunk = EMPTY
      this.pos = 0
      // One byte of room for the CR of a CRLF whose LF is still to come.
      if (this.headBytes + chunk.length - start > this.max + 1) return this.fail()
      this.keep(chunk.subarray(start))
      return null
    }
    this.pos = nl + 1
    let line: Buffer
    if (this.headBytes === 0) {
      line = chunk.subarray(start, nl)
    } else {
      this.head.push(chunk.subarray(start, nl))
      line = Buffer.concat(this.head, this.headBytes + nl - start)
      this.head = []
      this.headBytes = 0
    }
    this.since = 0
    let end = line.length
    if (end > 0 && line[end - 1] === CR) end--
    if (end > this.max) return this.fail()
    return end === line.length ? line : line.subarray(0, end)
  }

  private keep(bytes: Buffer): void {
    if (bytes.length === 0) return
    if (this.headBytes === 0) this.since = this.fedAt
    this.head.push(Buffer.from(bytes))
    this.headBytes += bytes.length
  }

  private fail(): typeof TOO_LONG {
    this.chunk = EMPTY
    this.pos = 0
    this.head = []
    this.headBytes = 0
    this.since = 0
    return TOO_LONG
  }
}

/** Whether a line holds nothing but JSON whitespace: such lines are skipped (a sender's keep-alive). */
export function blank(line: Buffer): boolean {
  for (let i = 0; i < line.length; i++) {
    const b = line[i]
    if (b !== 0x20 && b !== 0x09 && b !== CR) return false
  }
  return true
}

/** Longest device id or token the first line may carry: ids are 16 characters, tokens 36. */
const MAX_CREDENTIAL = 256

/** The first line, `{"id": <device id>, "token": <device token>}`, or what is wrong with it. */
export function parseHello(line: Buffer): { id: string; token: string } | string {
  let doc: unknown
  try {
    doc = JSON.parse(line.toString('utf8'))
  } catch {
    return 'the first line is not JSON'
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return 'the first line is not a JSON object'
  const { id, token } = doc as Record<string, unknown>
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_CREDENTIAL)
    return 'the first line has no "id" (the device id)'
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_CREDENTIAL)
    return 'the first line has no "token" (the device token)'
  return { id, token }
}
