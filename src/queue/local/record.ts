import { QUARANTINE_REASONS } from '../../readings/index.js'
import { TRANSPORTS, type Envelope } from '../types.js'

/**
 * One queue entry on disk, in a fixed binary layout: a header, the strings, then the payload as received.
 * Cheaper than a general serializer on the append path, and it leaves the payload bytes untouched.
 *
 *   0  u8   format (1)
 *   1  f64  receivedAt (ms since the epoch)
 *   9  u8   transport (index in TRANSPORTS, an append-only list)
 *  10  u8   rejected reason (index in QUARANTINE_REASONS, an append-only list; 255: not rejected)
 *  11  u16  deviceId bytes
 *  13  u16  topic bytes (65535: no topic)
 *  15  u32  rejected detail bytes
 *  19  deviceId, topic, detail (UTF-8), then the payload to the end
 *
 * Format 2, only for an envelope with an idempotency key (format 1 stays byte for byte what it was):
 *  19  u16  idempotency key bytes
 *  21  deviceId, topic, detail, idempotency key (UTF-8), then the payload to the end
 *
 * Two flags in the format byte, clear in entries written before them (read as before):
 * - 0x80: the gateway judged every reading valid (Envelope.allValid);
 * - 0x40: the topic is the device's telemetry topic, `devices/<deviceId>/telemetry` (that of nearly every
 *   entry), and is not written: the topic length says 0 and no topic bytes follow.
 */
const FORMAT = 1
const KEYED = 2
const ALL_VALID = 0x80
const OWN_TOPIC = 0x40
const FLAGS = ALL_VALID | OWN_TOPIC
const TOPIC_HEAD = 'devices/'
const TOPIC_TAIL = '/telemetry'
const HEADER = 19
const NONE8 = 255
const NONE16 = 0xffff
const TRANSPORT_INDEX = new Map(TRANSPORTS.map((t, i) => [t, i]))
const REASON_INDEX = new Map(QUARANTINE_REASONS.map((r, i) => [r, i]))

/**
 * Telemetry topics seen, each with its device (or '' for a topic that is no device's telemetry topic): a
 * lookup costs a fraction of comparing the parts for every entry. Bounded: a stream of made-up topics (each
 * refused, but still queued for the quarantine) only restarts it.
 */
const topicDevice = new Map<string, string>()
const CACHE_MAX = 10_000

/** Whether `topic` is `devices/<deviceId>/telemetry`. */
function isOwnTopic(topic: string, deviceId: string): boolean {
  let device = topicDevice.get(topic)
  if (device === undefined) {
    const n = TOPIC_HEAD.length + deviceId.length
    device =
      topic.length === n + TOPIC_TAIL.length &&
      topic.startsWith(TOPIC_HEAD) &&
      topic.endsWith(TOPIC_TAIL) &&
      topic.slice(TOPIC_HEAD.length, n) === deviceId
        ? deviceId
        : ''
    if (topicDevice.size >= CACHE_MAX) topicDevice.clear()
    topicDevice.set(topic, device)
  }
  return device === deviceId
}

/**
 * Device ids as UTF-8, each encoded once: every record starts with its device's, and writing the string anew
 * (Buffer#write, with its argument checks) cost more than the rest of the header. Bounded as topicDevice is.
 */
const deviceBytes = new Map<string, Buffer>()

function idBytes(deviceId: string): Buffer {
  let b = deviceBytes.get(deviceId)
  if (b === undefined) {
    if (deviceBytes.size >= CACHE_MAX) deviceBytes.clear()
    b = Buffer.from(deviceId)
    deviceBytes.set(deviceId, b)
  }
  return b
}

/** The byte lengths of one record's parts, as measured by measure(). */
interface Lengths {
  /** the device id, encoded */
  id: Buffer
  d: number
  /** 0 when the topic is absent or the device's own */
  t: number
  own: boolean
  r: number
  /** -1: no idempotency key */
  k: number
  size: number
}

function measure(e: Envelope, l: Lengths): Lengths {
  l.id = idBytes(e.deviceId)
  l.d = l.id.length
  l.own = e.topic !== undefined && isOwnTopic(e.topic, e.deviceId)
  l.t = e.topic === undefined || l.own ? 0 : Buffer.byteLength(e.topic)
  const detail = e.rejected?.detail ?? ''
  l.r = detail.length === 0 ? 0 : Buffer.byteLength(detail)
  l.k = e.idempotencyKey === undefined ? -1 : Buffer.byteLength(e.idempotencyKey)
  l.size = (l.k < 0 ? HEADER : HEADER + 2) + l.d + l.t + l.r + Math.max(l.k, 0) + e.payload.length
  return l
}

/** Writes the record of `e` at `at`, whose parts `l` measured; returns the position after it. */
function write(e: Envelope, l: Lengths, buf: Buffer, at: number): number {
  buf[at] = (l.k < 0 ? FORMAT : KEYED) | (e.allValid ? ALL_VALID : 0) | (l.own ? OWN_TOPIC : 0)
  buf.writeDoubleLE(e.receivedAt, at + 1)
  buf[at + 9] = TRANSPORT_INDEX.get(e.transport) ?? 0
  buf[at + 10] = e.rejected ? (REASON_INDEX.get(e.rejected.reason) ?? NONE8) : NONE8
  buf.writeUInt16LE(l.d, at + 11)
  buf.writeUInt16LE(e.topic === undefined ? NONE16 : l.t, at + 13)
  buf.writeUInt32LE(l.r, at + 15)
  if (l.k >= 0) buf.writeUInt16LE(l.k, at + HEADER)
  at += l.k < 0 ? HEADER : HEADER + 2
  buf.set(l.id, at)
  at += l.d
  if (l.t > 0) at += buf.write(e.topic!, at)
  if (l.r > 0) at += buf.write(e.rejected!.detail, at)
  if (l.k > 0) at += buf.write(e.idempotencyKey!, at)
  // TypedArray#set: a plain memory copy, without Buffer#copy's argument handling.
  buf.set(e.payload, at)
  return at + e.payload.length
}

const scratch: Lengths = { id: Buffer.alloc(0), d: 0, t: 0, own: false, r: 0, k: 0, size: 0 }

export function encodeRecord(e: Envelope): Buffer {
  const l = measure(e, scratch)
  const buf = Buffer.allocUnsafe(l.size)
  write(e, l, buf, 0)
  return buf
}

/** Records in one group entry at most, and the size past which a group takes no more. */
export const ENTRY_MAX_RECORDS = 256
const ENTRY_TARGET_BYTES = 64 * 1024
const GROUP = 3
const GROUP_HEADER = 5
/** Entries are carved one after another from slabs of this size (a record larger than it gets its own). */
const SLAB_BYTES = 256 * 1024
/** Slabs kept for reuse once their entries are committed: the group commits in flight need about this many. */
const SLAB_POOL = 8

/**
 * Encodes records into queue entries as the envelopes arrive, so that nothing of an envelope (its object, the
 * view of the socket's bytes it holds) lives on until the group commits: held that long, the in-flight
 * envelopes survived every young-generation collection and were copied by each. An entry is a lone record as
 * encodeRecord writes it, or a group (format 3) of up to ENTRY_MAX_RECORDS records, ENTRY_TARGET_BYTES or so:
 *   0  u8   3
 *   1  u32  count
 *   5  each record: u32 its length, then the record as above
 * One entry per group instead of one per record: LMDB's work (a B-tree insert on append, a read and a delete
 * in the ingest) is per entry, and it cost more than everything else about a record.
 *
 * Entries are views of a slab, left alone until their commit is done: lmdb-js reads a value's bytes on its
 * write thread, after put() returned. A slab all of whose entries were taken goes back to the writer with the
 * commit of the last of them (`release`), and is written again: a new one would cost a fresh allocation, its
 * pages faulted in, and external memory that hastens garbage collections.
 */
export class EntryWriter {
  private slab: Buffer = Buffer.allocUnsafe(SLAB_BYTES)
  /** Slabs left since the last take, and slabs free to write again. */
  private retired: Buffer[] = []
  private readonly pool: Buffer[] = []
  /** Where the open entry starts in the slab, where its next record goes, and how many it holds. */
  private start = 0
  private at = GROUP_HEADER
  private n = 0
  /** The finished entries not yet taken, and the records each holds. */
  private entries: Buffer[] = []
  private counts: number[] = []

  /** Appends the record of `e` to the open entry, finishing the entry when it is full. */
  add(e: Envelope): void {
    const l = measure(e, scratch)
    if (this.at + 4 + l.size > this.slab.length) this.newSlab(GROUP_HEADER + 4 + l.size)
    this.slab.writeUInt32LE(l.size, this.at)
    this.at = write(e, l, this.slab, this.at + 4)
    if (++this.n === ENTRY_MAX_RECORDS || this.at - this.start >= ENTRY_TARGET_BYTES) this.finish()
  }

  /**
   * The entries of everything added since the last take, in order, their record counts, and the slabs that
   * hold the last of their entries, to `release` once these entries are committed (commits end in order).
   */
  take(): { entries: Buffer[]; counts: number[]; slabs: Buffer[] } {
    this.finish()
    const taken = { entries: this.entries, counts: this.counts, slabs: this.retired }
    this.entries = []
    this.counts = []
    this.retired = []
    return taken
  }

  /** The slabs of a take whose commit is done, durable or failed: nothing reads their entries any more. */
  release(slabs: Buffer[]): void {
    for (const s of slabs) if (s.length === SLAB_BYTES && this.pool.length < SLAB_POOL) this.pool.push(s)
  }

  private finish(): void {
    const n = this.n
    if (n === 0) return
    const { slab, start } = this
    if (n === 1) {
      // A lone record is written as itself, without the group's header and its length.
      this.entries.push(slab.subarray(start + GROUP_HEADER + 4, this.at))
    } else {
      slab[start] = GROUP
      slab.writeUInt32LE(n, start + 1)
      this.entries.push(slab.subarray(start, this.at))
    }
    this.counts.push(n)
    this.n = 0
    this.start = this.at
    this.at += GROUP_HEADER
  }

  /** Moves on to a new slab with room for `need` bytes, taking the open entry's records along. */
  private newSlab(need: number): void {
    const used = this.at - this.start
    const size = Math.max(SLAB_BYTES, used + need)
    const slab = (size === SLAB_BYTES && this.pool.pop()) || Buffer.allocUnsafe(size)
    this.retired.push(this.slab)
    // The open entry's records so far (not yet handed to LMDB) move with it.
    if (this.n > 0) slab.set(this.slab.subarray(this.start + GROUP_HEADER, this.at), GROUP_HEADER)
    this.slab = slab
    this.start = 0
    this.at = used
  }
}

/** How many records an entry holds. */
export function entryCount(entry: Buffer): number {
  return entry[0] === GROUP ? entry.readUInt32LE(1) : 1
}

/**
 * The envelopes of an entry, appended to `out`. Each record has its own sequence number, the entry's key
 * being the last one's, and is identified as `<idPrefix><its number>`: a lone record by its entry's key, as
 * before groups.
 */
export function decodeEntry(entry: Buffer, key: number, idPrefix: string, out: Envelope[]): void {
  if (entry[0] !== GROUP) {
    out.push(decodeRecord(entry, idPrefix + key))
    return
  }
  previous.at = -1
  const n = entry.readUInt32LE(1)
  let at = GROUP_HEADER
  for (let i = 0; i < n; i++) {
    const len = entry.readUInt32LE(at)
    at += 4
    out.push(decodeAt(entry, at, at + len, idPrefix + (key - n + 1 + i)))
    at += len
  }
}

export function decodeRecord(buf: Buffer, id: string): Envelope {
  previous.at = -1
  return decodeAt(buf, 0, buf.length, id)
}

/**
 * The device of the record decoded last in the entry being decoded: where its id lies, and the strings made of
 * it. The records of a commit come in runs from one connection, so most share their device's strings instead
 * of decoding them again.
 */
const previous = { at: -1, len: 0, deviceId: '', topic: '' }

/** The record in buf[s, end): read where it lies, without a view of it first. */
function decodeAt(buf: Buffer, s: number, end: number, id: string): Envelope {
  const head = buf[s]
  const format = head & ~FLAGS
  const keyed = format === KEYED
  if (format !== FORMAT && !keyed) throw new Error(`queue entry ${id} has unknown format ${head}`)
  const dLen = buf.readUInt16LE(s + 11)
  const tRaw = buf.readUInt16LE(s + 13)
  const rLen = buf.readUInt32LE(s + 15)
  const kLen = keyed ? buf.readUInt16LE(s + HEADER) : 0
  let at = s + (keyed ? HEADER + 2 : HEADER)
  if (previous.at < 0 || dLen !== previous.len || !sameBytes(buf, at, previous.at, dLen)) {
    previous.deviceId = buf.toString('utf8', at, at + dLen)
    previous.topic = ''
  }
  previous.at = at
  previous.len = dLen
  const deviceId = previous.deviceId
  at += dLen
  let topic: string | undefined
  if (head & OWN_TOPIC) topic = previous.topic ||= TOPIC_HEAD + deviceId + TOPIC_TAIL
  else if (tRaw !== NONE16) topic = buf.toString('utf8', at, (at += tRaw))
  const detail = rLen > 0 ? buf.toString('utf8', at, (at += rLen)) : ''
  const idempotencyKey = keyed ? buf.toString('utf8', at, (at += kLen)) : undefined
  const reason = buf[s + 10] === NONE8 ? undefined : QUARANTINE_REASONS[buf[s + 10]]
  const env: Envelope = {
    id,
    deviceId,
    transport: TRANSPORTS[buf[s + 9]],
    topic,
    receivedAt: buf.readDoubleLE(s + 1),
    payload: buf.subarray(at, end),
    rejected: reason ? { reason, detail } : undefined,
  }
  if (idempotencyKey !== undefined) env.idempotencyKey = idempotencyKey
  if (head & ALL_VALID) env.allValid = true
  return env
}

function sameBytes(buf: Buffer, a: number, b: number, len: number): boolean {
  let i = 0
  while (i < len && buf[a + i] === buf[b + i]) i++
  return i === len
}

/** The first record's receivedAt alone, for the age of the oldest entry. */
export function entryReceivedAt(entry: Buffer): number {
  return entry.readDoubleLE(entry[0] === GROUP ? GROUP_HEADER + 4 + 1 : 1)
}
