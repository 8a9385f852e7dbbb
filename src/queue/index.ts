import { isMainThread } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { Config, Role } from '../config/index.js'
import { AmqpQueue } from './amqp/index.js'
import { LocalQueue } from './local/index.js'
import type { Queue } from './types.js'

/** The roles that append to the queue: the gateways, and the API (it replays quarantined messages). */
const APPENDING_ROLES: readonly Role[] = ['gateway', 'api']

/**
 * RabbitMQ when AMQP_URL is set, else the local LMDB queue in the data dir, which a process with an appending
 * role opens for appending (and so takes its lock, see LocalQueue). The ingest thread beside a gateway
 * (ingest/worker.ts) opens its own view of the same queue in the same process: only to consume.
 */
export function createQueue(
  config: Config,
  log: Logger,
): Queue & { onCommit: ((ms: number) => void) | undefined } {
  if (config.amqpUrl) {
    return new AmqpQueue(
      config.amqpUrl,
      log,
      config.queueMaxBytes,
      config.ingestBatchSize * (config.ingestConcurrency + 1),
    )
  }
  const appends = isMainThread && config.roles.some((r) => APPENDING_ROLES.includes(r))
  return new LocalQueue(config.dataDir, config.queueMaxBytes, log, appends ? 'append' : 'consume')
}
