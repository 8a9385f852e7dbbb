import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type Database, type RootDatabase, open } from 'lmdb'
import type { Logger } from 'pino'
import { IotError } from '../../errors.js'
import { BatchWait, ConsumerBatch } from '../consumer.js'
import { GroupCommitQueue } from '../group.js'
import type { Batch, Consumer, Envelope, Queue, QueueStats } from '../types.js'
import { lockAppends, unlockAppends } from './lock.js'
import { EntryWriter, decodeEntry, entryCount, entryReceivedAt } from './record.js'

/** How often the disk use is read back from LMDB; between reads it is estimated from what was appended. */
const STATS_INTERVAL_MS = 250
/** Per-entry overhead estimate (key, header, page slack) for the budget between two reads of the stats. */
const ENTRY_OVERHEAD_BYTES = 64
/** A consumer polls this often when idle, which is how it learns of appends made by another process. */
const IDLE_POLL_MS = 20

/** An appending queue holds the data dir's append lock; a consuming one only reads and removes entries. */
export type LocalQueueAccess = 'append' | 'consume'

/**
 * The local durable queue: an LMDB environment in `<dataDir>/queue`. Appends made in one event-loop turn
 * share one transaction, committed with fsync (overlappingSync off, so the commit promise means "on disk")
 * before any device is acknowledged. Each record gets a number of a sequence the appending process allocates
 * in memory (an entry holds the records of one commit, up to 256 of them, and is keyed by the last one's
 * number: record.ts), so one process appends per data dir, and `start` makes it so: an appending queue takes
 * the append lock (lock.ts) before it opens LMDB, and a second one fails there with IOT_ERR_QUEUE_LOCKED,
 * before its process listens to any device. Consuming queues (an ingest process, the ingest thread) take no
 * lock: they only read and remove, in LMDB transactions that LMDB serializes with the appender's across
 * processes, and since keys only grow (the sequence is saved with every commit) a consumer's cursor stays
 * valid across appender restarts. Entries come out in commit order.
 */
export class LocalQueue extends GroupCommitQueue implements Queue {
  readonly kind = 'local' as const
  private root!: RootDatabase
  private entries!: Database<Buffer, number>
  private meta!: Database<unknown, string>
  private instance = ''
  private lockFd: number | undefined
  private timer: NodeJS.Timeout | undefined
  private bytes = 0
  /** The estimate for appends admitted and not yet committed, which a read of the stats cannot see yet. */
  private uncommittedBytes = 0
  private seq = 0
  private depth = 0
  private oldestAt = 0
  private lastError: string | undefined
  private readonly consumers = new Set<LocalConsumer>()
  /** The open group's records, encoded as they are staged. */
  private readonly writer = new EntryWriter()
  /** The open group's budget estimate, and its first receivedAt (0: empty). */
  private stagedBytes = 0
  private stagedAt = 0

  constructor(
    private readonly dir: string,
    readonly maxBytes: number,
    private readonly log: Logger,
    readonly access: LocalQueueAccess,
  ) {
    super()
  }

  async start(): Promise<void> {
    const path = join(this.dir, 'queue')
    mkdirSync(path, { recursive: true })
    if (this.access === 'append') this.lockFd = lockAppends(path)
    try {
      this.openEnv(path)
    } catch (err) {
      this.unlock()
      throw err
    }
    this.refreshStats()
    this.timer = setInterval(() => this.refreshStats(), STATS_INTERVAL_MS)
    this.timer.unref()
    this.log.info(
      { path, access: this.access, depth: this.depth, maxBytes: this.maxBytes },
      'local queue open',
    )
  }

  private openEnv(path: string): void {
    this.root = open({
      path,
      // The map is address space, not disk; leave room past the budget so the budget, not LMDB, says full.
      mapSize: Math.ceil(this.maxBytes * 1.5) + 256 * 1024 * 1024,
      overlappingSync: false,
      maxDbs: 4,
    })
    this.entries = this.root.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' })
    this.meta = this.root.openDB<unknown, string>({ name: 'meta' })
    // Read and set in one write transaction: two processes opening a new queue at once agree on its id.
    this.instance = this.root.transactionSync(() => {
      let id = this.meta.get('instance') as string | undefined
      if (!id) {
        id = randomBytes(6).toString('base64url')
        this.meta.putSync('instance', id)
      }
      return id
    })
    if (this.access === 'append') {
      // Under the lock nobody else allocates keys: the sequence goes on from the last one allocated (saved
      // with every commit, as an ingest may have removed the entries meanwhile).
      let last = 0
      for (const key of this.entries.getKeys({ reverse: true, limit: 1 })) last = key
      this.seq = Math.max(last, (this.meta.get('seq') as number | undefined) ?? 0)
    }
  }

  private unlock(): void {
    if (this.lockFd === undefined) return
    unlockAppends(this.lockFd)
    this.lockFd = undefined
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.flush()
    for (const c of this.consumers) c.stopWaiting()
    await this.root?.committed
    await this.root?.close()
    this.unlock()
  }

  protected admit(env: Envelope): void {
    if (this.lockFd === undefined) {
      throw new IotError('IOT_ERR_QUEUE_UNAVAILABLE', 'this process does not hold the append lock')
    }
    // Refused messages are still kept for the quarantine: they are small and were never acked.
    if (this.bytes >= this.maxBytes && env.rejected === undefined) {
      throw new IotError('IOT_ERR_QUEUE_FULL', `${this.bytes} of ${this.maxBytes} bytes used`)
    }
    const size = env.payload.length + ENTRY_OVERHEAD_BYTES
    this.bytes += size
    this.uncommittedBytes += size
  }

  protected stage(env: Envelope): void {
    this.writer.add(env)
    this.stagedBytes += env.payload.length + ENTRY_OVERHEAD_BYTES
    if (this.stagedAt === 0) this.stagedAt = env.receivedAt
  }

  protected commit(count: number, done: (err?: Error) => void): void {
    const { entries, meta } = this
    const { entries: staged, counts, slabs } = this.writer.take()
    const size = this.stagedBytes
    const firstAt = this.stagedAt
    this.stagedBytes = 0
    this.stagedAt = 0
    // batch(): the pages are written and fsynced on lmdb-js's write thread. Every record has a number of the
    // sequence; an entry holds a run of them (record.ts) and is keyed by its last.
    entries
      .batch(() => {
        for (let i = 0; i < staged.length; i++) {
          this.seq += counts[i]
          entries.put(this.seq, staged[i])
        }
        meta.put('seq', this.seq)
      })
      .then(
        () => {
          this.writer.release(slabs)
          this.uncommittedBytes -= size
          this.lastError = undefined
          this.depth += count
          if (this.oldestAt === 0) this.oldestAt = firstAt
          done()
          for (const c of this.consumers) c.wake()
        },
        (err: Error) => {
          this.writer.release(slabs)
          this.uncommittedBytes -= size
          this.lastError = err.message
          this.log.error({ err, count }, 'durable append failed; the messages are not acknowledged')
          done(err)
        },
      )
  }

  private refreshStats(): void {
    try {
      const s = this.entries.getStats() as {
        pageSize: number
        treeBranchPageCount: number
        treeLeafPageCount: number
        overflowPages: number
        entryCount: number
      }
      // Plus what is admitted and still being written (a slow fsync outlasts the interval): without it the
      // budget would read low until the next refresh and admit past it. A commit that lands between the read
      // and its callback is counted twice until then, which errs on the safe side.
      this.bytes =
        (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages) * s.pageSize + this.uncommittedBytes
      if (s.entryCount === 0) {
        this.depth = 0
        this.oldestAt = 0
      } else {
        // The records from the oldest entry's first to the newest entry's last: exact, except while a batch
        // is acked before an older one (its records are still counted until the older is acked too).
        let first = 0
        for (const { key, value } of this.entries.getRange({ limit: 1 })) {
          this.oldestAt = entryReceivedAt(value)
          first = key - entryCount(value) + 1
        }
        for (const key of this.entries.getKeys({ reverse: true, limit: 1 })) this.depth = key - first + 1
      }
    } catch (err) {
      this.lastError = (err as Error).message
    }
  }

  stats(): QueueStats {
    return {
      depth: this.depth,
      oldestAgeSeconds: this.oldestAt === 0 ? 0 : Math.max(0, (Date.now() - this.oldestAt) / 1000),
      bytes: this.bytes,
      maxBytes: this.maxBytes,
      full: this.bytes >= this.maxBytes,
      healthy: this.lastError === undefined,
      detail: this.lastError,
    }
  }

  consumer(): Consumer {
    const c = new LocalConsumer(this, this.entries, this.instance)
    this.consumers.add(c)
    return c
  }

  /** @internal */
  removeConsumer(c: LocalConsumer): void {
    this.consumers.delete(c)
  }

  /** @internal `records`: how many the entries hold. */
  async remove(keys: number[], records: number): Promise<void> {
    const { entries } = this
    await entries.batch(() => {
      for (const k of keys) entries.remove(k)
    })
    this.depth = Math.max(0, this.depth - records)
  }
}

/** A local batch's delivery: its keys in LMDB. */
type LocalBatch = ConsumerBatch<{ keys: number[] }>

/**
 * Hands out entries oldest first. Entries stay in LMDB until acked; a cursor remembers what was handed out,
 * so a restart (a new cursor) hands out again whatever was not acked, and the store's dedup absorbs it.
 */
class LocalConsumer implements Consumer {
  private cursor = 0
  /** Keys handed out and not yet acked or nacked: a rewound cursor must not hand them out twice. */
  private readonly out = new Set<number>()
  /** Deliveries so far of a failed batch, by its first key, so a re-read batch knows its attempt. */
  private readonly attempts = new Map<number, number>()
  private readonly wait = new BatchWait()

  constructor(
    private readonly queue: LocalQueue,
    private readonly entries: Database<Buffer, number>,
    private readonly instance: string,
  ) {}

  wake(): void {
    this.wait.wake()
  }

  stopWaiting(): void {
    this.wait.close()
  }

  async next(max: number, waitMs: number): Promise<Batch | null> {
    const keys: number[] = []
    const items: Envelope[] = []
    // With some items, wait out the batch window; with none, wait for an append (or poll another process).
    const filled = await this.wait.fill(max, waitMs, IDLE_POLL_MS, () => {
      this.read(max - items.length, keys, items)
      return items.length
    })
    if (!filled) return null
    return new ConsumerBatch(this, { keys }, items, this.attempts.get(Math.min(...keys)) ?? 0)
  }

  private read(max: number, keys: number[], items: Envelope[]): void {
    if (max <= 0) return
    this.entries.resetReadTxn()
    let left = max
    const prefix = `${this.instance}:`
    for (const { key, value } of this.entries.getRange({ start: this.cursor + 1 })) {
      if (this.out.has(key)) {
        this.cursor = key
        continue
      }
      // Whole entries only (their records are removed together); one that would overfill the batch waits for
      // the next, unless the batch has nothing yet.
      const count = entryCount(value)
      if (count > left && keys.length > 0) break
      this.cursor = key
      this.out.add(key)
      keys.push(key)
      decodeEntry(value, key, prefix, items)
      left -= count
      if (left <= 0) break
    }
  }

  async ack(batch: LocalBatch): Promise<void> {
    const { keys } = batch.delivery
    await this.queue.remove(keys, batch.items.length)
    for (const k of keys) this.out.delete(k)
    this.attempts.delete(Math.min(...keys))
  }

  /**
   * The batch goes back by rewinding the cursor to it: its entries are still in LMDB and are read again, oldest
   * first and in full batches. (Holding failed batches aside instead would, over a long outage, pile up the
   * small batches read meanwhile, and drain the backlog in those small pieces.)
   */
  nack(batch: LocalBatch): void {
    // Not keys[0]: a batch whose window spanned an earlier rewind holds later keys before earlier ones.
    let first = Number.POSITIVE_INFINITY
    for (const k of batch.delivery.keys) {
      this.out.delete(k)
      if (k < first) first = k
    }
    this.attempts.set(first, batch.attempt + 1)
    this.cursor = Math.min(this.cursor, first - 1)
  }

  async close(): Promise<void> {
    this.stopWaiting()
    this.queue.removeConsumer(this)
  }
}
