import client from 'prom-client'

/**
 * The platform's Prometheus metrics, one registry per process. Counters count readings (an array payload
 * of n readings counts n), so that once the queue is empty: acked = stored + duplicate + quarantined.
 * Messages refused before any ack (a forbidden topic, an oversize payload) are `rejected`, not `acked`.
 */
export function createMetrics() {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry, prefix: 'iotcore_process_' })
  /** Hot paths count in plain numbers and hand them over here, when the metrics are read. */
  const beforeCollect: Array<() => void> = []
  const registers = [registry]
  const counter = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: () => void,
  ) => new client.Counter<L>({ name, help, labelNames, registers, collect })
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Gauge<L>({ name, help, labelNames, registers })
  const histogram = (name: string, help: string, buckets: number[]) =>
    new client.Histogram({ name, help, buckets, registers })
  const transport = ['transport'] as const
  const handOver = () => {
    for (const f of beforeCollect) f()
  }
  // biome-ignore format: a table, one line per metric
  return {
    registry,
    beforeCollect,
    received: counter('iotcore_messages_received_total', 'Readings received by the gateways, valid or not', transport, handOver),
    acked: counter('iotcore_messages_acked_total', 'Readings acknowledged to devices after the durable append', transport),
    rejected: counter('iotcore_messages_rejected_total', 'Readings refused with an error to the device (never acknowledged)', ['transport', 'reason'] as const),
    refusals: counter('iotcore_device_refusals_total', 'Device connections and requests refused before a reading was taken (unknown device or token, a flood from one address, broken framing, too large, too slow), by device listener', ['transport', 'reason'] as const),
    stored: counter('iotcore_messages_stored_total', 'Readings written to the telemetry table'),
    duplicate: counter('iotcore_messages_duplicate_total', 'Readings whose device and msgId were already stored'),
    quarantined: counter('iotcore_messages_quarantined_total', 'Acknowledged readings that failed validation or storage, kept in the quarantine table'),
    ingestBatchSize: histogram('iotcore_ingest_batch_size', 'Queue items per ingest batch', [1, 10, 50, 100, 500, 1000, 2500, 5000, 10000]),
    ingestBatchSeconds: histogram('iotcore_ingest_batch_seconds', 'Time to write one ingest batch to PostgreSQL', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    ingestErrors: counter('iotcore_ingest_errors_total', 'Failed ingest batch writes, by kind (outage: retried; data: the batch was split)', ['kind'] as const),
    commitSeconds: histogram('iotcore_queue_commit_seconds', 'Time from the first message of a group commit to its durable append', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
    mqttConnections: gauge('iotcore_mqtt_connections', 'Open MQTT connections (TCP and WebSocket), authenticated or not'),
    queueDepth: gauge('iotcore_queue_depth', 'Messages in the durable queue, not yet stored'),
    queueOldestAge: gauge('iotcore_queue_oldest_age_seconds', 'Age of the oldest message in the durable queue'),
    queueBytes: gauge('iotcore_queue_bytes', 'Disk used by the durable queue'),
    databaseUp: gauge('iotcore_database_up', '1 while the ingest can write to PostgreSQL'),
    jobLastRun: gauge('iotcore_job_last_run_timestamp_seconds', 'When each scheduled job of this process last finished a run (unix seconds)', ['job'] as const),
    jobLastDuration: gauge('iotcore_job_last_duration_seconds', 'How long the last run of each scheduled job took', ['job'] as const),
    jobRuns: counter('iotcore_job_runs_total', 'Runs of each scheduled job of this process, by result (ok, failed)', ['job', 'result'] as const),
    checkUp: gauge('iotcore_check_up', "1 while this process's service check passes, 0 while it fails (a service alert is open)", ['check'] as const),
    countersUnaccounted: gauge('iotcore_counters_unaccounted', 'Acked readings minus those stored, duplicate or quarantined, at the last check that found the queue empty (0: they add up)'),
    webhookAttempts: counter('iotcore_webhook_attempts_total', 'Webhook delivery attempts made by this process, by result (delivered, retry, gave_up)', ['result'] as const),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
