/**
 * Versioned migrations, applied in order, each in its own transaction, recorded in `iotcore_migrations`.
 * Plain SQL in TypeScript modules so they ship inside the compiled package. Never edit a released one: add
 * the next.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'devices, telemetry, quarantine',
    sql: `
CREATE TABLE devices (
  id           text PRIMARY KEY,
  name         text NOT NULL,
  imei         text UNIQUE,
  token_hash   text NOT NULL UNIQUE,
  attributes   jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz,
  -- {key: {ts, value}}, merged by the ingest in the same transaction as the rows, so GET /latest reads one row
  latest       jsonb NOT NULL DEFAULT '{}'
);

-- One row per reading, values as jsonb: a row per key would multiply rows (and halve throughput) for no
-- query we serve. No time partitioning: PostgreSQL requires the partition key in every unique index, and
-- dedup must hold on (device_id, msg_id) whatever the ts. Range queries use (device_id, ts); scans over
-- all devices by arrival use the BRIN index, which costs almost nothing on append.
CREATE TABLE telemetry (
  device_id   text NOT NULL,
  msg_id      text NOT NULL,
  ts          timestamptz NOT NULL,
  received_at timestamptz NOT NULL,
  values      jsonb NOT NULL,
  PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts);
CREATE INDEX telemetry_received_brin ON telemetry USING brin (received_at);

CREATE TABLE quarantine (
  id          bigserial PRIMARY KEY,
  -- the queue envelope and the reading's place in it: a redelivered envelope is quarantined once
  source_id   text NOT NULL,
  device_id   text,
  transport   text NOT NULL,
  topic       text,
  reason      text NOT NULL,
  detail      text NOT NULL,
  payload     bytea NOT NULL,
  -- false: the gateway refused it (the device got an error); true: acknowledged, then found bad
  acked       boolean NOT NULL,
  received_at timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  replayed_at timestamptz,
  UNIQUE (source_id)
);
CREATE INDEX quarantine_device ON quarantine (device_id, received_at);
CREATE INDEX quarantine_reason ON quarantine (reason, received_at);

-- Keeps, per key, whichever of the two values is newer: a backlog drained late never overwrites fresher data.
CREATE FUNCTION iot_merge_latest(old jsonb, new jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(old, '{}'::jsonb) || coalesce((
    SELECT jsonb_object_agg(n.key, n.value) FROM jsonb_each(new) n
    WHERE old -> n.key IS NULL OR (n.value ->> 'ts')::bigint >= (old -> n.key ->> 'ts')::bigint
  ), '{}'::jsonb)
$$;
`,
  },
  {
    version: 2,
    name: 'service heartbeats, MQTT sessions',
    sql: `
-- Every iotcore process beats here; the organizer (one across processes) reports the silent ones.
CREATE TABLE services (
  id          text PRIMARY KEY,
  roles       text[] NOT NULL,
  host        text NOT NULL,
  pid         int NOT NULL,
  started_at  timestamptz NOT NULL,
  beat_at     timestamptz NOT NULL,
  stopped_at  timestamptz
);

-- MQTT sessions of clients that connect with clean session 0 (v3) or a session expiry (v5): their
-- subscriptions outlive the connection and the process.
CREATE TABLE mqtt_sessions (
  client_key    text PRIMARY KEY,
  device_id     text NOT NULL,
  subscriptions jsonb NOT NULL DEFAULT '{}',
  expiry_s      bigint NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mqtt_sessions_device ON mqtt_sessions (device_id);
`,
  },
  {
    version: 3,
    name: 'keyset paging of the device and quarantine lists',
    sql: `
-- GET /devices and GET /quarantine (without a filter) page by (time, id): these let a page start at its
-- cursor instead of sorting the whole table. Neither table is written per stored reading.
CREATE INDEX devices_created ON devices (created_at, id);
CREATE INDEX quarantine_received ON quarantine (received_at, id);
`,
  },
  {
    version: 4,
    name: 'HTTP Idempotency-Key records; quarantine reason invalid_timestamp renamed invalid_ts',
    sql: `
-- One row per (device, Idempotency-Key) of HTTP ingest (store/idempotency.ts): claimed by the first request
-- (status NULL while it runs), then holding its answer for the retries until expires_at. Pruned by the store.
CREATE TABLE idempotency_keys (
  device_id    text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  key          text NOT NULL,
  -- sha256 of the request body as decoded: the same key with another body is refused
  request_hash text NOT NULL,
  claimed_at   timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  status       int,
  response     text,
  PRIMARY KEY (device_id, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- The reason's name in the reading contract; queue entries keep its position in QUARANTINE_REASONS.
UPDATE quarantine SET reason = 'invalid_ts' WHERE reason = 'invalid_timestamp';
`,
  },
  {
    version: 5,
    name: 'retired devices',
    sql: `
-- DELETE /devices/:id?data=keep retires a device instead of removing it: the row and its telemetry stay
-- readable, its credentials go (token_hash NULL: no token hashes to it), and the ingest quarantines what
-- still arrives for it. A second DELETE with data=delete removes both.
ALTER TABLE devices ADD COLUMN retired_at timestamptz;
ALTER TABLE devices ALTER COLUMN token_hash DROP NOT NULL;
-- A retired device's imei is free again (the same tracker registered anew); live devices keep it unique.
ALTER TABLE devices DROP CONSTRAINT devices_imei_key;
CREATE UNIQUE INDEX devices_imei_live ON devices (imei) WHERE retired_at IS NULL;
`,
  },
  {
    version: 6,
    name: 'devices.latest_ts_max: the newest ts merged into latest',
    sql: `
-- The largest ts among the keys of devices.latest (ms since the epoch), NULL while latest is empty. A batch
-- whose every key is at least this new wins on every key, so the ingest merges it with a plain || and
-- compares key by key (iot_merge_latest) only for a backlog that arrives late: half the cost of the UPDATE.
ALTER TABLE devices ADD COLUMN latest_ts_max int8;
UPDATE devices SET latest_ts_max = (SELECT max((v ->> 'ts')::int8) FROM jsonb_each(latest) AS e(k, v));
`,
  },
  {
    version: 7,
    name: 'telemetry keyed by an integer device key (devices.pk)',
    sql: `
-- Each device gets an integer key, and telemetry rows carry it instead of the device's text id: PostgreSQL
-- compares and stores 8 bytes per row in both indexes instead of the id, and spends ~17% less CPU per stored
-- reading (npm run bench:ab).
-- The API still names devices by id; the store maps id to pk (the ingest with the lock it takes anyway). An
-- identity never reuses a value: a device created after a delete cannot inherit telemetry under its pk.
ALTER TABLE devices ADD COLUMN pk int8 GENERATED ALWAYS AS IDENTITY;
ALTER TABLE devices ADD CONSTRAINT devices_pk_key UNIQUE (pk);

-- Rows stored for a device that no longer exists (before the ingest locked its batch's devices, readings
-- still queued at a delete were written anyway) have no pk to take. Rather than lose them, their device comes
-- back retired: its telemetry is readable and removable through the API (DELETE /devices/:id?data=delete),
-- like any retired device's.
INSERT INTO devices (id, name, created_at, retired_at)
  SELECT t.device_id, t.device_id, min(t.received_at), now() FROM telemetry t
  WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = t.device_id)
  GROUP BY t.device_id;

-- The table is rewritten (in this one transaction: a failure leaves the old one as it was), and its indexes
-- built after the copy, faster than row by row. The join scans telemetry in its stored order, which the BRIN
-- index on received_at relies on.
CREATE TABLE telemetry_by_pk (
  device_pk   int8 NOT NULL,
  msg_id      text NOT NULL,
  ts          timestamptz NOT NULL,
  received_at timestamptz NOT NULL,
  values      jsonb NOT NULL
);
INSERT INTO telemetry_by_pk (device_pk, msg_id, ts, received_at, values)
  SELECT d.pk, t.msg_id, t.ts, t.received_at, t.values FROM telemetry t JOIN devices d ON d.id = t.device_id;
DROP TABLE telemetry;
ALTER TABLE telemetry_by_pk RENAME TO telemetry;
ALTER TABLE telemetry ADD CONSTRAINT telemetry_pkey PRIMARY KEY (device_pk, msg_id);
CREATE INDEX telemetry_device_ts ON telemetry (device_pk, ts);
CREATE INDEX telemetry_received_brin ON telemetry USING brin (received_at);
`,
  },
  {
    version: 8,
    name: 'downlink commands',
    sql: `
-- Commands to devices (store/commands.ts): created by the API, claimed and sent by the gateway process that
-- holds the device's connection (gateway/dispatch.ts), answered by the device. The id is a bigint identity:
-- its order is the order a device's commands are sent in.
CREATE TABLE commands (
  id           int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_id    text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  name         text NOT NULL,
  params       jsonb NOT NULL DEFAULT '{}',
  status       text NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'sent', 'delivered', 'replied', 'failed', 'expired')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  -- the latest send; the device took it (MQTT PUBACK); it answered
  sent_at      timestamptz,
  delivered_at timestamptz,
  replied_at   timestamptz,
  -- past this, a command not yet sent is expired instead
  expires_at   timestamptz NOT NULL,
  -- what the device answered
  result       jsonb,
  -- sends so far, one per connection it went out on
  attempts     int NOT NULL DEFAULT 0,
  last_error   text,
  -- while status is 'sent': the process (services.id) that claimed it, whose connection to the device holds it
  sent_by      text
);
-- A device's waiting commands, oldest first: what a gateway claims when the device connects or one is queued.
CREATE INDEX commands_waiting ON commands (device_id, id) WHERE status = 'queued';
-- GET /devices/:id/commands, a page at a time by (created_at, id).
CREATE INDEX commands_device ON commands (device_id, created_at, id);
-- The sweeps: waiting commands past their ttl, and sent ones whose process is gone. Both sets stay small.
CREATE INDEX commands_queued_expiry ON commands (expires_at) WHERE status = 'queued';
CREATE INDEX commands_sent_by ON commands (sent_by) WHERE status = 'sent';
`,
  },
  {
    version: 9,
    name: 'alerts, the events outbox, webhooks and their deliveries',
    sql: `
-- Alerts (store/alerts.ts). A subject, a device or a service, has at most one active alert of a type: a raise
-- while one is active bumps it (count, last_seen, severity, details). Clearing closes it for good: the unique
-- index covers active rows only, so the next raise opens a new row and a cleared alert is never reused
-- (ThingsBoard #7811), and clearing is a plain state change any process can make (ThingsBoard #7909).
-- Acknowledging is independent of it: active or cleared, unacknowledged or acknowledged.
CREATE TABLE alerts (
  id              bigserial PRIMARY KEY,
  subject_kind    text NOT NULL CHECK (subject_kind IN ('device', 'service')),
  subject_id      text NOT NULL,
  type            text NOT NULL,
  severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
  status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cleared')),
  first_seen      timestamptz NOT NULL,
  last_seen       timestamptz NOT NULL,
  count           int8 NOT NULL,
  details         jsonb NOT NULL DEFAULT '{}',
  acknowledged_at timestamptz,
  cleared_at      timestamptz
);
CREATE UNIQUE INDEX alerts_one_active ON alerts (subject_kind, subject_id, type) WHERE status = 'active';
-- GET /alerts pages by (first_seen, id), a key a bump does not move; by subject when one is asked for.
CREATE INDEX alerts_first_seen ON alerts (first_seen, id);
CREATE INDEX alerts_subject ON alerts (subject_kind, subject_id, first_seen);

-- The outbox: every alert event (opened, acknowledged, cleared) and webhook test, written in the transaction
-- that made it, under an advisory lock taken just before, so ids are committed in id order: a reader that has
-- seen id n has seen every event before it (the SSE streams and the deliverer read by id).
CREATE TABLE events (
  id         bigserial PRIMARY KEY,
  uid        uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  type       text NOT NULL,
  alert_id   int8 REFERENCES alerts (id) ON DELETE CASCADE,
  data       jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_created ON events (created_at);

-- Webhooks: where events are POSTed, signed with the secret (and, during a rotation, the previous one).
CREATE TABLE webhooks (
  id                  bigserial PRIMARY KEY,
  url                 text NOT NULL,
  -- the event types it gets; NULL: all
  events              text[],
  secret              text NOT NULL,
  previous_secret     text,
  previous_expires_at timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now()
);

-- One delivery per (webhook, event), made with the event, in its transaction: a receiver gets each event
-- once (retries of one delivery carry the same event id), and one created while it was down waits here.
CREATE TABLE webhook_deliveries (
  id          bigserial PRIMARY KEY,
  webhook_id  int8 NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
  event_id    int8 NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  -- the event's alert: deliveries of one alert to one webhook go in id order, each after the one before
  alert_id    int8,
  status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts    int NOT NULL DEFAULT 0,
  next_at     timestamptz NOT NULL DEFAULT now(),
  created_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, alert_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (webhook_id, created_at, id);

CREATE TABLE webhook_attempts (
  id          bigserial PRIMARY KEY,
  delivery_id int8 NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  at          timestamptz NOT NULL DEFAULT now(),
  -- the receiver's HTTP status; NULL when none came (refused, timed out)
  status_code int,
  error       text,
  duration_ms int NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
`,
  },
  {
    version: 10,
    name: 'quality checks: reading flags, rules, devices.quality state, sequence gaps, device alerts due',
    sql: `
-- The names of the quality checks a reading failed (src/quality), NULL when it passed them all. Nullable and
-- without a default: adding it rewrites nothing, the COPY does not name it, and an unflagged row stores no
-- byte for it (its bit in the null bitmap fits the tuple header's alignment padding). The ingest sets it on
-- the flagged rows only, in the batch's transaction, once it knows which rows were stored.
ALTER TABLE telemetry ADD COLUMN flags text[];
-- The flagged readings of a device by time (?flagged=true). Partial: appending an unflagged row costs only the
-- predicate check.
CREATE INDEX telemetry_flagged ON telemetry (device_pk, ts) WHERE flags IS NOT NULL;

-- User rules. A rule applies to one device (device_id), or to every device whose attributes contain
-- \`attributes\` (jsonb @>; '{}' is every device). Rules are never edited, only created and deleted: the
-- ingest caches their definitions by id.
CREATE TABLE quality_rules (
  id          int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  device_id   text REFERENCES devices (id) ON DELETE CASCADE,
  attributes  jsonb,
  condition   jsonb NOT NULL,
  trigger     jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CHECK ((device_id IS NULL) <> (attributes IS NULL))
);

-- What the checks remember of a device between batches (last position, numeric keys, rule clocks, recent
-- violations, highest seq), in the device's row, and its version, one more at each write. The UPDATE of
-- \`latest\` that every batch makes returns the version (RETURNING): it holds the row's lock, and after
-- waiting for a concurrent batch of the device it returns the row as that batch left it. The ingest keeps the
-- states it wrote or read, and reads one again only when its version moved (another process wrote it).
-- Written, in the batch's transaction, only when it changed. No rewrite: a nullable column, and a constant
-- default PostgreSQL keeps in the catalog.
ALTER TABLE devices ADD COLUMN quality jsonb, ADD COLUMN quality_version int8 NOT NULL DEFAULT 0;

-- Gaps in a device's sequence numbers: [first_seq, last_seq] as found, \`missing\` what has still not
-- arrived, as flattened inclusive ranges [a1, b1, a2, b2, ...]. Closed when the last of it arrives (missing
-- empty) or when the device's counter restarts (missing then says what never came).
CREATE TABLE sequence_gaps (
  id         int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_pk  int8 NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
  first_seq  int8 NOT NULL,
  last_seq   int8 NOT NULL,
  missing    int8[] NOT NULL,
  opened_at  timestamptz NOT NULL,
  closed_at  timestamptz,
  alerted_at timestamptz
);
CREATE INDEX sequence_gaps_device ON sequence_gaps (device_pk, opened_at, id);
CREATE INDEX sequence_gaps_open ON sequence_gaps (device_pk) WHERE closed_at IS NULL;

-- The device alerts the checks want, one row per (device, type): the latest wanted state, and whether it
-- has been handed to the alerts (DeviceAlerts in src/ingest). Written in the batch's transaction, handed
-- over after its commit; \`version\` tells a hand-over that the row changed meanwhile.
CREATE TABLE device_alerts_due (
  device_pk  int8 NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
  type       text NOT NULL,
  active     boolean NOT NULL,
  severity   text NOT NULL,
  details    jsonb NOT NULL,
  changed_at timestamptz NOT NULL,
  version    int8 NOT NULL DEFAULT 1,
  delivered  boolean NOT NULL DEFAULT false,
  PRIMARY KEY (device_pk, type)
);
CREATE INDEX device_alerts_due_pending ON device_alerts_due (changed_at) WHERE NOT delivered;
`,
  },
]
