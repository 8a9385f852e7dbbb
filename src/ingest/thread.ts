import { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import type { Metrics } from '../metrics/index.js'
import { type IngestEvents, metricsEvents } from './index.js'

/** A crashed ingest thread is started again after this pause; nothing is lost, its batches are redelivered. */
const RESTART_DELAY_MS = 1000

/**
 * Runs the ingest on a worker thread, so that in one process the gateways' event loop (parse, append, ack)
 * and the ingest's (parse again, COPY, commit) each have a core. Same surface as `Ingest` for the app.
 */
export class IngestThread {
  private worker: Worker | undefined
  private stopping = false
  private readonly events: IngestEvents
  databaseUp = true
  lastError: string | undefined

  constructor(
    private readonly config: Config,
    private readonly databaseUrl: string,
    metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.events = metricsEvents(metrics)
  }

  start(): Promise<void> {
    this.stopping = false
    const worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { config: this.config, databaseUrl: this.databaseUrl },
      // 3 x 64 MiB semi-spaces (V8's default here is 16): a batch's short-lived objects die before a scavenge.
      resourceLimits: { maxYoungGenerationSizeMb: 192 },
    })
    this.worker = worker
    worker.on('message', (m) => {
      switch (m.t) {
        case 'batch':
          this.events.batch(m.r, m.items, m.seconds)
          this.databaseUp = true
          this.lastError = undefined
          break
        case 'error':
          this.events.error(m.kind, m.message)
          this.lastError = m.message
          break
        case 'database':
          this.events.database(m.up)
          this.databaseUp = m.up
          break
      }
    })
    worker.on('error', (err) => this.log.error({ err }, 'ingest thread failed'))
    worker.on('exit', (code) => {
      if (this.worker !== worker || this.stopping) return
      this.log.error({ code }, 'ingest thread exited; restarting it')
      setTimeout(() => {
        if (!this.stopping)
          this.start().catch((err) => this.log.error({ err }, 'ingest thread restart failed'))
      }, RESTART_DELAY_MS).unref()
    })
    return new Promise((resolve, reject) => {
      const onMessage = (m: { t: string }) => {
        if (m.t !== 'started') return
        worker.off('message', onMessage)
        resolve()
      }
      worker.on('message', onMessage)
      worker.once('error', reject)
    })
  }

  async stop(): Promise<void> {
    this.stopping = true
    const worker = this.worker
    this.worker = undefined
    if (!worker) return
    await new Promise<void>((resolve) => {
      const done = () => resolve()
      worker.once('exit', done)
      worker.on('message', (m: { t: string }) => {
        if (m.t === 'stopped') worker.terminate().then(done, done)
      })
      worker.postMessage({ t: 'stop' })
    })
  }
}
