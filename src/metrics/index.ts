import client from 'prom-client'

/**
 * The platform's Prometheus metrics, one registry per process. Counters count readings (an array payload
 * of n readings counts n), so that once the queue is empty: acked = stored + duplicate + quarantined.
 * Messages refused before any ack (a forbidden topic, an oversize payload) are `rejected`, not `acked`.
 */
export function createMetrics() {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry, prefix: 'iotcore_process_' })
  const labels = ['transport'] as const
  /** Hot paths count in plain numbers and hand them over here, when the metrics are read. */
  const beforeCollect: Array<() => void> = []
  const m = {
    registry,
    beforeCollect,
    received: new client.Counter({
      name: 'iotcore_messages_received_total',
      help: 'Readings received by the gateways, valid or not',
      labelNames: labels,
      registers: [registry],
      collect() {
        for (const f of beforeCollect) f()
      },
    }),
    acked: new client.Counter({
      name: 'iotcore_messages_acked_total',
      help: 'Readings acknowledged to devices after the durable append',
      labelNames: labels,
      registers: [registry],
    }),
    rejected: new client.Counter({
      name: 'iotcore_messages_rejected_total',
      help: 'Readings refused with an error to the device (never acknowledged)',
      labelNames: ['transport', 'reason'] as const,
      registers: [registry],
    }),
    stored: new client.Counter({
      name: 'iotcore_messages_stored_total',
      help: 'Readings written to the telemetry table',
      registers: [registry],
    }),
    duplicate: new client.Counter({
      name: 'iotcore_messages_duplicate_total',
      help: 'Readings whose device and msgId were already stored',
      registers: [registry],
    }),
    quarantined: new client.Counter({
      name: 'iotcore_messages_quarantined_total',
      help: 'Acknowledged readings that failed validation or storage, kept in the quarantine table',
      registers: [registry],
    }),
    ingestBatchSize: new client.Histogram({
      name: 'iotcore_ingest_batch_size',
      help: 'Queue items per ingest batch',
      buckets: [1, 10, 50, 100, 500, 1000, 2500, 5000, 10000],
      registers: [registry],
    }),
    ingestBatchSeconds: new client.Histogram({
      name: 'iotcore_ingest_batch_seconds',
      help: 'Time to write one ingest batch to PostgreSQL',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    ingestErrors: new client.Counter({
      name: 'iotcore_ingest_errors_total',
      help: 'Failed ingest batch writes, by kind (outage: retried; data: the batch was split)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    commitSeconds: new client.Histogram({
      name: 'iotcore_queue_commit_seconds',
      help: 'Time from the first message of a group commit to its durable append',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    mqttConnections: new client.Gauge({
      name: 'iotcore_mqtt_connections',
      help: 'Open MQTT connections (TCP and WebSocket), authenticated or not',
      registers: [registry],
    }),
    queueDepth: new client.Gauge({
      name: 'iotcore_queue_depth',
      help: 'Messages in the durable queue, not yet stored',
      registers: [registry],
    }),
    queueOldestAge: new client.Gauge({
      name: 'iotcore_queue_oldest_age_seconds',
      help: 'Age of the oldest message in the durable queue',
      registers: [registry],
    }),
    queueBytes: new client.Gauge({
      name: 'iotcore_queue_bytes',
      help: 'Disk used by the durable queue',
      registers: [registry],
    }),
    databaseUp: new client.Gauge({
      name: 'iotcore_database_up',
      help: '1 while the ingest can write to PostgreSQL',
      registers: [registry],
    }),
  }
  return m
}

export type Metrics = ReturnType<typeof createMetrics>
