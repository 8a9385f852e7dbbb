/**
 * The ingest on a thread of its own (see thread.ts): it opens its own view of the queue (the same LMDB
 * environment, or its own RabbitMQ connection) and its own PostgreSQL pool, builds the ingest the one way the
 * process does (createIngest), and reports to the main thread.
 */
import { readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'
import { parentPort, workerData } from 'node:worker_threads'
import type { Config } from '../config/index.js'
import { createLogger } from '../logger.js'
import { createQueue } from '../queue/index.js'
import { Store } from '../store/index.js'
import { type IngestEvents, createIngest, storeAlerts } from './index.js'

const { config, databaseUrl } = workerData as { config: Config; databaseUrl: string }

/**
 * Beside the gateways, this thread gives way to them when both want a core: a device waits on its ack, nobody
 * waits on a row, and the durable queue holds the difference. A background job's nice, so the ingest still
 * gets a share under contention and all of a core that is free. Linux: /proc/thread-self names this thread,
 * and setpriority(2) given a thread's id renices that thread alone; elsewhere it keeps the process's.
 */
const INGEST_NICE = 10
try {
  setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), INGEST_NICE)
} catch {
  // Not Linux: no thread of its own to renice.
}
const port = parentPort!
const log = createLogger(config.logLevel).child({ component: 'ingest', thread: 'ingest' })
const events: IngestEvents = {
  batch: (r, items, seconds) => port.postMessage({ t: 'batch', r, items, seconds }),
  error: (kind, message) => port.postMessage({ t: 'error', kind, message }),
  database: (up) => port.postMessage({ t: 'database', up }),
}
const store = new Store(databaseUrl, log, config.ingestConcurrency)
const queue = createQueue(config, log)
await queue.start()
const ingest = createIngest(config, { queue, writer: store, events, log, alerts: storeAlerts(store.alerts) })
ingest.start()
port.postMessage({ t: 'started' })
port.on('message', async (m: { t: string }) => {
  if (m.t !== 'stop') return
  await ingest.stop()
  await store.stop().catch(() => {})
  // Stopped here too, not left to the main thread: a local queue's stats timer would otherwise fire into an
  // environment the main thread has closed while this thread is being terminated, which V8 cannot survive
  // (lmdb-js counts each thread's open of one path; the environment closes with the last).
  await queue.stop()
  port.postMessage({ t: 'stopped' })
})
