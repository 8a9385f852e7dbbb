import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import { AmqpQueue } from './amqp/index.js'
import { LocalQueue } from './local/index.js'
import type { Queue } from './types.js'

/** RabbitMQ when AMQP_URL is set, else the local LMDB queue in the data dir. */
export function createQueue(
  config: Config,
  log: Logger,
): Queue & { onCommit: ((ms: number) => void) | undefined } {
  return config.amqpUrl
    ? new AmqpQueue(
        config.amqpUrl,
        log,
        config.queueMaxBytes,
        config.ingestBatchSize * (config.ingestConcurrency + 1),
      )
    : new LocalQueue(config.dataDir, config.queueMaxBytes, log)
}
