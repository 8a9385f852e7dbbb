/**
 * The MQTT wire contract (CONTRACT.md): which topics a device may use and what each carries. A device owns
 * `devices/<its id>/` and nothing else; an operator (operators.ts) may only subscribe under
 * `$iotcore/alerts/`.
 */
export interface CommandAck {
  id: string
  status: 'ok' | 'error'
  result?: unknown
}

export interface Command {
  id: string
  name: string
  params?: Record<string, unknown>
}

/** Topic suffix (after `devices/<id>/`) to the payload type it carries. */
export interface TopicPayloads {
  telemetry: import('../../readings/index.js').Reading | import('../../readings/index.js').Reading[]
  commands: Command
  'commands/ack': CommandAck
}

/** Suffixes a device may publish to: readings, and its answers to commands (never readings). */
export const PUBLISH_SUFFIXES = ['telemetry', 'commands/ack'] as const satisfies ReadonlyArray<
  keyof TopicPayloads
>
export type PublishSuffix = (typeof PUBLISH_SUFFIXES)[number]

export const devicePrefix = (deviceId: string) => `devices/${deviceId}/`

export type TopicCheck = PublishSuffix | 'forbidden' | 'unknown'

/** Classifies a PUBLISH topic for this device. */
export function classifyPublish(deviceId: string, topic: string): TopicCheck {
  const prefix = devicePrefix(deviceId)
  if (!topic.startsWith(prefix)) return 'forbidden'
  const suffix = topic.slice(prefix.length)
  return (PUBLISH_SUFFIXES as readonly string[]).includes(suffix) ? (suffix as PublishSuffix) : 'unknown'
}

/**
 * A SUBSCRIBE filter is allowed only if everything it can match lies under the device's own prefix.
 * [MQTT-4.7.1-1] (v3.1.1: MQTT-4.7.1-2) '#' must be the last character and alone in its level; [MQTT-4.7.1-2]
 * (v3.1.1: MQTT-4.7.1-3) '+' alone in its level.
 */
export function subscriptionAllowed(deviceId: string, filter: string): boolean {
  if (!validFilter(filter)) return false
  const prefix = devicePrefix(deviceId)
  return filter.startsWith(prefix)
}

/** Where the alert events go, by alert type: `$iotcore/alerts/<type>` (operators.ts). */
export const OPERATOR_PREFIX = '$iotcore/alerts/'

/**
 * The topic of an alert type's events. A type is one level of a topic name, which holds no wildcard
 * [MQTT-3.3.2-2] (v3.1.1: MQTT-3.3.2-2): those, and `/`, become `_` (the built-in types are snake_case and
 * never have them; U+0000, which a topic may not hold either [MQTT-1.5.4-2], PostgreSQL text cannot).
 */
export const alertTopic = (type: string) => OPERATOR_PREFIX + type.replace(/[/+#]/g, '_')

/** An operator may subscribe to `$iotcore/alerts/#`, `$iotcore/alerts/+` or one type, and nothing else. */
export const operatorSubscriptionAllowed = (filter: string) =>
  validFilter(filter) && filter.startsWith(OPERATOR_PREFIX)

export function validFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return false
    if (l.includes('+') && l !== '+') return false
  }
  return true
}

/**
 * Whether a topic filter matches a topic name: `+` matches one whole level, `#` all that follow, the parent
 * level included (§4.7.1.2 in both versions: `sport/#` also matches `sport`). Filters reach here checked by
 * validFilter.
 */
export function filterMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] (both versions) a filter starting with a wildcard matches no topic starting with `$`.
  if (topic.startsWith('$') && (filter[0] === '#' || filter[0] === '+')) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false
  }
  return f.length === t.length
}
