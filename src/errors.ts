/**
 * The one registry of coded errors. Every error a user can meet has a code, an HTTP status and a message that
 * says what was wrong and what to do. Codes are stable: clients and logs match on them. docs/errors.md
 * documents each one (a test holds the two together).
 */
// biome-ignore format: a table, one line per code
export const ErrorCodes = {
  IOT_ERR_CONFIG_INVALID: { status: 500, message: 'Invalid configuration: %s' },
  IOT_ERR_UNAUTHORIZED: { status: 401, message: 'Missing or invalid bearer token: %s' },
  IOT_ERR_NOT_FOUND: { status: 404, message: 'No such route: %s; the API is described at /docs' },
  IOT_ERR_DEVICE_NOT_FOUND: { status: 404, message: "Device '%s' does not exist; list devices with GET /api/v1/devices" },
  IOT_ERR_DEVICE_RETIRED: { status: 409, message: "Device '%s' is retired: its telemetry can still be read, and it cannot connect again; DELETE it with data=delete to remove it" },
  IOT_ERR_DEVICE_CONFLICT: { status: 409, message: 'A device with this %s already exists; choose another or delete it first' },
  IOT_ERR_COMMAND_NOT_FOUND: { status: 404, message: "Command '%s' of device '%s' does not exist; list the device's commands with GET /api/v1/devices/:id/commands" },
  IOT_ERR_QUARANTINE_NOT_FOUND: { status: 404, message: "Quarantined message '%s' does not exist" },
  IOT_ERR_ALERT_NOT_FOUND: { status: 404, message: "Alert '%s' does not exist; list alerts with GET /api/v1/alerts" },
  IOT_ERR_WEBHOOK_NOT_FOUND: { status: 404, message: "Webhook '%s' does not exist; list webhooks with GET /api/v1/webhooks" },
  IOT_ERR_QUARANTINE_REPLAYED: { status: 409, message: "Quarantined message '%s' was already replayed" },
  IOT_ERR_RULE_NOT_FOUND: { status: 404, message: "Rule '%s' does not exist; list rules with GET /api/v1/rules" },
  IOT_ERR_RULE_CONFLICT: { status: 409, message: "A rule named '%s' already exists; choose another name or delete it first" },
  IOT_ERR_BAD_REQUEST: { status: 400, message: '%s' },
  IOT_ERR_UNSTORABLE_TEXT: { status: 400, message: '%s, which PostgreSQL cannot store in text; remove it' },
  IOT_ERR_MALFORMED_JSON: { status: 400, message: 'The body is not valid JSON: %s. Send a JSON object or an array of objects' },
  IOT_ERR_INVALID_READING: { status: 400, message: 'Invalid reading: %s' },
  IOT_ERR_PAYLOAD_TOO_LARGE: { status: 413, message: 'The payload is too large (%s); the limit is %s bytes. Split it into smaller messages' },
  IOT_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: "Content-Type '%s' is not accepted here; send application/json" },
  IOT_ERR_UNSUPPORTED_ENCODING: { status: 415, message: "Content-Encoding '%s' is not supported; send the body as is, or encoded with gzip, deflate or br" },
  IOT_ERR_MALFORMED_ENCODING: { status: 400, message: 'The body cannot be decoded as %s: %s. Send it encoded as its Content-Encoding says, or unencoded' },
  IOT_ERR_IDEMPOTENCY_KEY_REUSED: { status: 422, message: "Idempotency-Key '%s' was used with another body; a retry must send the same body, a new request a new key" },
  IOT_ERR_IDEMPOTENCY_KEY_IN_USE: { status: 409, message: "A request with Idempotency-Key '%s' is being answered; retry in a moment to get its answer" },
  IOT_ERR_QUEUE_FULL: { status: 503, message: 'The durable queue is full (%s); retry later' },
  IOT_ERR_QUEUE_UNAVAILABLE: { status: 503, message: 'The durable queue is unavailable: %s; retry later' },
  IOT_ERR_INTERNAL: { status: 500, message: 'Internal error; see the server log' },
  IOT_ERR_QUEUE_LOCKED: { status: 409, message: 'The local queue in %s already has its appending process (pid %s): one process per data dir runs the gateway and api roles. For several gateway processes, set AMQP_URL to use RabbitMQ' },
  IOT_ERR_IMEI_NOT_REGISTERED: { status: 403, message: "No device is registered with the identifier '%s'; register one with POST /api/v1/devices {\"name\": ..., \"imei\": \"%s\"}" },
  IOT_ERR_RATE_LIMITED: { status: 429, message: 'Too many refused attempts from %s; retry in %s s' },
  IOT_ERR_TIMEOUT: { status: 408, message: 'Nothing complete came in time: %s' },
  IOT_ERR_CLOUD_API: { status: 502, message: 'DigitalOcean answered %s %s with %s: %s' },
  IOT_ERR_CLOUD_NOT_READY: { status: 504, message: '%s did not happen within %s s' },
} as const

export type ErrorCode = keyof typeof ErrorCodes

/** What fills the message's `%s` slots, in order; one value needs no array. */
export type ErrorArgs = string | number | ReadonlyArray<string | number>

/**
 * A coded error: `new IotError(code, args, { cause })`. The message is the registry's, with `args` in its
 * slots; `cause` keeps the error underneath (a driver's, a parser's) for the log, never for the client.
 */
export class IotError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number

  constructor(code: ErrorCode, args: ErrorArgs = [], options?: { cause?: unknown }) {
    const values = typeof args === 'object' ? args : [args]
    let i = 0
    super(
      ErrorCodes[code].message.replace(/%s/g, () => String(values[i++] ?? '')),
      options,
    )
    this.name = 'IotError'
    this.code = code
    this.statusCode = ErrorCodes[code].status
  }
}

/** True for an IotError, or one with this code: match on codes, never on messages. */
export function isIotError(err: unknown, code?: ErrorCode): err is IotError {
  return err instanceof IotError && (code === undefined || err.code === code)
}
