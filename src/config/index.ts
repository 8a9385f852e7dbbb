import { readFileSync, statfsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { IotError } from '../errors.js'

export const ROLES = ['api', 'gateway', 'ingest', 'organizer'] as const
export type Role = (typeof ROLES)[number]

/** Defaults, each with why. */
export const DEFAULTS = {
  dataDir: './data',
  host: '0.0.0.0',
  httpPort: 8080,
  mqttPort: 1883,
  teltonikaPort: 5027,
  osmandPort: 5055,
  jsonlPort: 5060,
  signalPort: 2006,
  /** IANA's port for MQTT over TLS; listened on only with a certificate. */
  mqttsPort: 8883,
  /** The payload limit: large enough for a batch of a few thousand readings, small enough that one
   * device cannot make the process buffer megabytes. */
  maxPayloadBytes: 256 * 1024,
  /** Seconds of silence before a device counts as offline (CONTRACT.md). */
  offlineAfterSeconds: 600,
  checkIntervalSeconds: 30,
  /** Stripe's retry period: a receiver down over a weekend still gets every event. */
  webhookRetryForSeconds: 3 * 86_400,
  /** The age of the oldest queued reading past which the ingest counts as lagging: well past a backlog
   * drained after a short database restart (seconds), short of an operator noticing on their own. */
  maxIngestLagSeconds: 300,
  /** Free disk in the data dir below which a service alert opens: room for PostgreSQL's WAL to grow and for
   * an operator to act before the queue's budget, or PostgreSQL, runs out of disk. */
  minFreeDiskBytes: 1024 ** 3,
  /** A socket that has not sent CONNECT within this many seconds is closed, so idle scanners cannot hold
   * file descriptors. */
  mqttConnectTimeoutSeconds: 10,
  /** Longest keepalive we accept; a client asking for more (or 0, none) gets this as Server Keep Alive in
   * MQTT 5, so dead TCP connections are found within 1.5x of it. */
  mqttMaxKeepaliveSeconds: 300,
  /** Longest silence an MQTT 3.1.1 connection is held, whatever its keepalive (0, none, included): v3.1.1
   * cannot be told a Server Keep Alive, so its own is honoured up to this. An hour outlasts the idle timeout of
   * most mobile carriers' NATs (minutes), past which a silent TCP connection is more likely dead than quiet,
   * while holding it costs memory and a file descriptor. A device quieter than this should send PINGREQs. */
  mqttIdleLimitSeconds: 3600,
  /** Seconds a Teltonika device has to complete its IMEI handshake, or a packet it began sending, before the
   * connection is closed. The documented largest packet (1,280 bytes) takes well under a second even on 2G;
   * 30 s covers a radio stall and TCP retransmissions, and frees a socket that trickles bytes to hold it. */
  teltonikaTimeoutSeconds: 30,
  /** QoS 1/2 publishes a client may have unacknowledged (MQTT 5 Receive Maximum). 100 covers a pipelined
   * client's window with no head-of-line wait at our group-commit latency. */
  mqttReceiveMaximum: 100,
  /** Readings per ingest batch and the longest a partial batch waits: PostgreSQL's COPY gains little past
   * a few thousand rows, and 50 ms keeps end-to-end latency low at light load. */
  ingestBatchSize: 5000,
  ingestBatchMs: 50,
  /** Parallel batches in flight to PostgreSQL: two connections nearly doubled dedup-safe inserts here. */
  ingestConcurrency: 2,
  /** Share of the data dir's free disk the local queue may use when IOTCORE_QUEUE_MAX_BYTES is unset,
   * capped, so a full queue cannot fill the disk PostgreSQL also needs. */
  queueDiskShare: 0.25,
  queueMaxBytesCap: 64 * 1024 ** 3,
  queueMinBytes: 64 * 1024 ** 2,
  /** A position implying a faster move than this from the last one is a jump (issue 15: 300 km/h). */
  maxSpeedKmh: 300,
  /** 0: no age limit. Trackers out of coverage keep their readings for days or weeks and send them late:
   * their age alone does not make them wrong. */
  maxReadingAgeSeconds: 0,
  /** Flagged readings from one device within the window that want a "device check" alert. */
  deviceCheckViolations: 10,
  deviceCheckWindowSeconds: 3600,
  /** A sequence gap still open this long wants a "sequence gap" alert: late readings get time to arrive. */
  gapAlertAfterSeconds: 600,
  logLevel: 'info',
} as const

export interface Config {
  readonly roles: readonly Role[]
  readonly dataDir: string
  readonly databaseUrl: string | undefined
  readonly amqpUrl: string | undefined
  readonly adminToken: string | undefined
  readonly host: string
  /** null: the listener is off. */
  readonly httpPort: number | null
  readonly mqttPort: number | null
  readonly teltonikaPort: number | null
  readonly osmandPort: number | null
  readonly jsonlPort: number | null
  readonly signalPort: number | null
  /**
   * The TLS certificate and key (PEM files, absolute paths), both or neither: with them the HTTP port serves
   * HTTPS and the TCP device listeners accept TLS. Reloaded when the files change (lib/tls.ts).
   */
  readonly tlsCert: string | undefined
  readonly tlsKey: string | undefined
  /** CA bundle (PEM) that MQTT client certificates are verified against; only with a certificate. */
  readonly tlsCa: string | undefined
  /** MQTT over TLS; null without a certificate or when 'off'. */
  readonly mqttsPort: number | null
  readonly queueMaxBytes: number
  readonly maxPayloadBytes: number
  readonly offlineAfterSeconds: number
  readonly checkIntervalSeconds: number
  /** How long a webhook delivery is retried before it is given up. */
  readonly webhookRetryForSeconds: number
  readonly maxIngestLagSeconds: number
  readonly minFreeDiskBytes: number
  readonly mqttConnectTimeoutSeconds: number
  readonly mqttMaxKeepaliveSeconds: number
  readonly mqttIdleLimitSeconds: number
  readonly mqttReceiveMaximum: number
  readonly teltonikaTimeoutSeconds: number
  readonly ingestBatchSize: number
  readonly ingestBatchMs: number
  readonly ingestConcurrency: number
  /** Run the ingest on its own thread when it shares the process with a gateway. */
  readonly ingestThread: boolean
  readonly maxSpeedKmh: number
  readonly maxReadingAgeSeconds: number
  readonly deviceCheckViolations: number
  readonly deviceCheckWindowSeconds: number
  readonly gapAlertAfterSeconds: number
  readonly logLevel: string
  /** The console map's tile URL template ({z}/{x}/{y}); unset: the bundled world outline alone, offline. */
  readonly mapTiles: string | undefined
  /** Credit shown on the map for those tiles (most tile servers' terms require one). */
  readonly mapAttribution: string | undefined
}

type Env = Record<string, string | undefined>

function fail(name: string, value: string, want: string): never {
  throw new IotError('IOT_ERR_CONFIG_INVALID', `${name}=${JSON.stringify(value)}: expected ${want}`)
}

function missing(name: string, why: string): never {
  throw new IotError('IOT_ERR_CONFIG_INVALID', `${name} is unset: ${why}`)
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return def
  if (!/^\d+$/.test(raw.trim())) fail(name, raw, `an integer from ${min} to ${max}`)
  const n = Number(raw.trim())
  if (n < min || n > max) fail(name, raw, `an integer from ${min} to ${max}`)
  return n
}

function bool(env: Env, name: string, def: boolean): boolean {
  const raw = env[name]
  if (raw === undefined || raw === '') return def
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  fail(name, raw, 'true or false')
}

function port(env: Env, names: string[], def: number): number | null {
  for (const name of names) {
    const raw = env[name]
    if (raw === undefined || raw === '') continue
    if (raw.trim().toLowerCase() === 'off') return null
    if (!/^\d+$/.test(raw.trim()) || Number(raw) > 65535) fail(name, raw, "a port from 0 to 65535, or 'off'")
    return Number(raw)
  }
  return def
}

function bytes(env: Env, name: string): number | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(raw.trim())
  if (!m) fail(name, raw, 'a size in bytes, e.g. 1073741824, 512MiB or 2GiB')
  const unit = (m[2] ?? 'b').toLowerCase()[0] as 'b' | 'k' | 'm' | 'g' | 't'
  const mult = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit]
  const n = Math.floor(Number(m[1]) * mult)
  if (n < 1024 * 1024) fail(name, raw, 'at least 1MiB')
  return n
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    fail(name, raw, `a URL (${protocols.join(' or ')})`)
  }
  if (!protocols.includes(u.protocol)) fail(name, raw, `a URL starting with ${protocols.join(' or ')}`)
  return raw
}

/** A tile URL template: http(s), with the {z}, {x} and {y} a map fills in. */
function tileUrl(env: Env, name: string): string | undefined {
  const raw = url(env, name, ['http:', 'https:'])
  if (raw !== undefined && !['{z}', '{x}', '{y}'].every((p) => raw.includes(p)))
    fail(
      name,
      raw,
      'a tile URL template with {z}, {x} and {y}, e.g. https://tile.example.org/{z}/{x}/{y}.png',
    )
  return raw
}

function file(env: Env, name: string): string | undefined {
  const raw = env[name]
  return raw === undefined || raw.trim() === '' ? undefined : resolve(raw.trim())
}

/**
 * The TLS entries: a certificate needs its key and a key its certificate; a CA bundle or an MQTTS port number
 * means nothing without them, so each is refused alone rather than silently ignored. The files are read when
 * the platform starts (lib/tls.ts), which fails then, naming the variable, if one cannot be used.
 */
function tls(env: Env): Pick<Config, 'tlsCert' | 'tlsKey' | 'tlsCa' | 'mqttsPort'> {
  const tlsCert = file(env, 'IOTCORE_TLS_CERT')
  const tlsKey = file(env, 'IOTCORE_TLS_KEY')
  const tlsCa = file(env, 'IOTCORE_TLS_CA')
  if (tlsCert !== undefined && tlsKey === undefined)
    missing('IOTCORE_TLS_KEY', "IOTCORE_TLS_CERT is set; give its private key's PEM file too")
  if (tlsKey !== undefined && tlsCert === undefined)
    missing('IOTCORE_TLS_CERT', "IOTCORE_TLS_KEY is set; give its certificate's PEM file too")
  const mqttsPort = port(env, ['IOTCORE_MQTTS_PORT'], DEFAULTS.mqttsPort)
  if (tlsCert === undefined) {
    if (tlsCa !== undefined)
      missing(
        'IOTCORE_TLS_CERT',
        'IOTCORE_TLS_CA is set, and client certificates need TLS: set IOTCORE_TLS_CERT and IOTCORE_TLS_KEY',
      )
    const mqtts = env.IOTCORE_MQTTS_PORT
    if (mqttsPort !== null && mqtts !== undefined && mqtts.trim() !== '')
      missing(
        'IOTCORE_TLS_CERT',
        `IOTCORE_MQTTS_PORT=${mqtts} is set, and MQTT over TLS needs a certificate: set IOTCORE_TLS_CERT and IOTCORE_TLS_KEY`,
      )
  }
  return { tlsCert, tlsKey, tlsCa, mqttsPort: tlsCert === undefined ? null : mqttsPort }
}

export function parseRoles(raw: string | undefined): Role[] {
  if (raw === undefined || raw.trim() === '' || raw.trim() === 'all') return [...ROLES]
  const roles = raw.split(',').map((r) => r.trim())
  for (const r of roles) {
    if (!(ROLES as readonly string[]).includes(r))
      fail('--roles', raw, `a comma-separated subset of ${ROLES.join(',')}`)
  }
  return [...new Set(roles)] as Role[]
}

function defaultQueueBytes(dataDir: string): number {
  try {
    const s = statfsSync(dataDir)
    const share = Math.floor(s.bavail * s.bsize * DEFAULTS.queueDiskShare)
    return Math.max(DEFAULTS.queueMinBytes, Math.min(DEFAULTS.queueMaxBytesCap, share))
  } catch {
    return 1024 ** 3
  }
}

/** Reads the configuration once, at start; a bad value fails here with the variable's name. */
export function loadConfig(env: Env = process.env, flags: { roles?: string } = {}): Config {
  const dataDir = resolve(env.IOTCORE_DATA_DIR || DEFAULTS.dataDir)
  const logLevel = env.IOTCORE_LOG_LEVEL || env.LOG_LEVEL || DEFAULTS.logLevel
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    fail('IOTCORE_LOG_LEVEL', logLevel, 'one of fatal, error, warn, info, debug, trace, silent')
  }
  const adminToken = env.IOTCORE_ADMIN_TOKEN || undefined
  if (adminToken !== undefined && adminToken.length < 16)
    fail('IOTCORE_ADMIN_TOKEN', '***', 'at least 16 characters')
  const config: Config = {
    roles: parseRoles(flags.roles ?? env.IOTCORE_ROLES),
    dataDir,
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    // CLOUDAMQP_URL is what RabbitMQ add-ons on a PaaS set; AMQP_URL, when set, wins.
    amqpUrl: url(env, 'AMQP_URL', ['amqp:', 'amqps:']) ?? url(env, 'CLOUDAMQP_URL', ['amqp:', 'amqps:']),
    adminToken,
    host: env.IOTCORE_HOST || DEFAULTS.host,
    httpPort: port(env, ['IOTCORE_HTTP_PORT', 'PORT'], DEFAULTS.httpPort),
    mqttPort: port(env, ['IOTCORE_MQTT_PORT'], DEFAULTS.mqttPort),
    teltonikaPort: port(env, ['IOTCORE_TELTONIKA_PORT'], DEFAULTS.teltonikaPort),
    osmandPort: port(env, ['IOTCORE_OSMAND_PORT'], DEFAULTS.osmandPort),
    jsonlPort: port(env, ['IOTCORE_JSONL_PORT'], DEFAULTS.jsonlPort),
    signalPort: port(env, ['IOTCORE_SIGNAL_PORT'], DEFAULTS.signalPort),
    ...tls(env),
    queueMaxBytes: bytes(env, 'IOTCORE_QUEUE_MAX_BYTES') ?? defaultQueueBytes(existingParent(dataDir)),
    maxPayloadBytes: int(env, 'IOTCORE_MAX_PAYLOAD_BYTES', DEFAULTS.maxPayloadBytes, 1024, 64 * 1024 * 1024),
    offlineAfterSeconds: int(env, 'IOTCORE_OFFLINE_AFTER', DEFAULTS.offlineAfterSeconds, 1, 365 * 86400),
    checkIntervalSeconds: int(env, 'IOTCORE_CHECK_INTERVAL', DEFAULTS.checkIntervalSeconds, 1, 86400),
    webhookRetryForSeconds: int(
      env,
      'IOTCORE_WEBHOOK_RETRY_FOR',
      DEFAULTS.webhookRetryForSeconds,
      1,
      30 * 86400,
    ),
    maxIngestLagSeconds: int(env, 'IOTCORE_MAX_INGEST_LAG', DEFAULTS.maxIngestLagSeconds, 1, 7 * 86400),
    minFreeDiskBytes: bytes(env, 'IOTCORE_MIN_FREE_DISK') ?? DEFAULTS.minFreeDiskBytes,
    mqttConnectTimeoutSeconds: int(
      env,
      'IOTCORE_MQTT_CONNECT_TIMEOUT',
      DEFAULTS.mqttConnectTimeoutSeconds,
      1,
      600,
    ),
    mqttMaxKeepaliveSeconds: int(
      env,
      'IOTCORE_MQTT_MAX_KEEPALIVE',
      DEFAULTS.mqttMaxKeepaliveSeconds,
      1,
      65535,
    ),
    mqttIdleLimitSeconds: int(env, 'IOTCORE_MQTT_IDLE_LIMIT', DEFAULTS.mqttIdleLimitSeconds, 1, 7 * 86400),
    mqttReceiveMaximum: int(env, 'IOTCORE_MQTT_RECEIVE_MAXIMUM', DEFAULTS.mqttReceiveMaximum, 1, 65535),
    teltonikaTimeoutSeconds: int(env, 'IOTCORE_TELTONIKA_TIMEOUT', DEFAULTS.teltonikaTimeoutSeconds, 1, 3600),
    ingestBatchSize: int(env, 'IOTCORE_INGEST_BATCH_SIZE', DEFAULTS.ingestBatchSize, 1, 100000),
    ingestBatchMs: int(env, 'IOTCORE_INGEST_BATCH_MS', DEFAULTS.ingestBatchMs, 1, 10000),
    ingestConcurrency: int(env, 'IOTCORE_INGEST_CONCURRENCY', DEFAULTS.ingestConcurrency, 1, 16),
    ingestThread: bool(env, 'IOTCORE_INGEST_THREAD', true),
    maxSpeedKmh: int(env, 'IOTCORE_MAX_SPEED_KMH', DEFAULTS.maxSpeedKmh, 1, 100_000),
    maxReadingAgeSeconds: int(
      env,
      'IOTCORE_MAX_READING_AGE',
      DEFAULTS.maxReadingAgeSeconds,
      0,
      100 * 365 * 86400,
    ),
    deviceCheckViolations: int(
      env,
      'IOTCORE_DEVICE_CHECK_VIOLATIONS',
      DEFAULTS.deviceCheckViolations,
      1,
      10_000,
    ),
    deviceCheckWindowSeconds: int(
      env,
      'IOTCORE_DEVICE_CHECK_WINDOW',
      DEFAULTS.deviceCheckWindowSeconds,
      1,
      365 * 86400,
    ),
    gapAlertAfterSeconds: int(env, 'IOTCORE_GAP_ALERT_AFTER', DEFAULTS.gapAlertAfterSeconds, 0, 365 * 86400),
    logLevel,
    mapTiles: tileUrl(env, 'IOTCORE_MAP_TILES'),
    mapAttribution: env.IOTCORE_MAP_ATTRIBUTION || undefined,
  }
  return Object.freeze(config)
}

function existingParent(dir: string): string {
  let d = dir
  for (;;) {
    try {
      statfsSync(d)
      return d
    } catch {
      const parent = resolve(d, '..')
      if (parent === d) return d
      d = parent
    }
  }
}

/** What the commands that talk to a running platform or to DigitalOcean read (`iotcore simulate`, `cloud`). */
export interface ClientConfig {
  /** Where a running platform's HTTP port answers. */
  readonly url: string
  /** Its MQTT port over TCP, on the same host. */
  readonly mqttPort: number
  /** Its device ports on the same host: Teltonika (TCP), OsmAnd (HTTP), JSON lines (TCP). */
  readonly teltonikaPort: number
  readonly osmandPort: number
  readonly jsonlPort: number
  /** IOTCORE_ADMIN_TOKEN, else the data dir's admin-token file when there is one. */
  readonly adminToken: string | undefined
  readonly digitalOceanToken: string | undefined
  /** DigitalOcean's API; another base URL (a test server, a proxy) is accepted as doctl's --api-url is. */
  readonly digitalOceanApiUrl: string
}

export function loadClientConfig(env: Env = process.env): ClientConfig {
  const dataDir = resolve(env.IOTCORE_DATA_DIR || DEFAULTS.dataDir)
  let adminToken = env.IOTCORE_ADMIN_TOKEN || undefined
  if (!adminToken) {
    try {
      adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim() || undefined
    } catch {}
  }
  return Object.freeze({
    url: (url(env, 'IOTCORE_URL', ['http:', 'https:']) ?? 'http://localhost:8080').replace(/\/+$/, ''),
    mqttPort: port(env, ['IOTCORE_MQTT_PORT'], DEFAULTS.mqttPort) ?? DEFAULTS.mqttPort,
    teltonikaPort: port(env, ['IOTCORE_TELTONIKA_PORT'], DEFAULTS.teltonikaPort) ?? DEFAULTS.teltonikaPort,
    osmandPort: port(env, ['IOTCORE_OSMAND_PORT'], DEFAULTS.osmandPort) ?? DEFAULTS.osmandPort,
    jsonlPort: port(env, ['IOTCORE_JSONL_PORT'], DEFAULTS.jsonlPort) ?? DEFAULTS.jsonlPort,
    adminToken,
    digitalOceanToken: env.DIGITALOCEAN_TOKEN || undefined,
    digitalOceanApiUrl: (
      url(env, 'DIGITALOCEAN_API_URL', ['https:', 'http:']) ?? 'https://api.digitalocean.com'
    ).replace(/\/+$/, ''),
  })
}
