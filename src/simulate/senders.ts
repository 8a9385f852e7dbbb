import { jsonlSender } from './jsonl.js'
import { MqttDevice } from './mqtt-client.js'
import { teltonikaSender } from './teltonika.js'

/**
 * How the simulator's devices talk to the platform: one sender per protocol, all behind this interface, so a
 * protocol is one more entry in SENDERS. A sender takes readings with a token and reports each token once:
 * acked (durably queued by the platform) or refused (the platform said no, and resending will not help).
 * Anything else (a connection lost, a 503) it retries itself, as a device would.
 */
export interface SimDevice {
  id: string
  token: string
  /** What the protocols that name a device by IMEI (Teltonika, OsmAnd) send. */
  imei: string
}

export interface SenderEvents {
  acked(token: number): void
  refused(token: number, why: string): void
}

export interface Target {
  /** The platform's HTTP base URL. */
  url: string
  /** The host of its other ports. */
  host: string
  mqttPort: number
  teltonikaPort: number
  osmandPort: number
  jsonlPort: number
}

export interface Sender {
  /** Starts connecting (where the protocol has connections); `connected` counts those that made it. */
  start(): Promise<void>
  send(device: number, token: number, reading: Record<string, unknown>): void
  /** Readings handed over and not yet acked or refused. */
  readonly pending: number
  readonly connected: number
  stop(): Promise<void>
}

export type SenderFactory = (target: Target, devices: SimDevice[], events: SenderEvents) => Sender

export interface Protocol {
  create: SenderFactory
  /** Why its readings cannot carry a `seq`, when they cannot: no sequence gap can be injected over it. */
  noSeq?: string
  /** Set when its devices are known by their IMEI: what needs it, for the message when one has none. */
  needsImei?: string
}

const RETRY_MS = [250, 500, 1000, 2000, 5000]

/** MQTT 5 over TCP, one connection per device, QoS 1 on devices/<id>/telemetry. */
const mqttSender: SenderFactory = (target, devices, events) => {
  let connected = 0
  const clients = devices.map((d) => {
    let up = false
    return new MqttDevice(target.host, target.mqttPort, d.id, d.token, `devices/${d.id}/telemetry`, {
      acked: (token, ok, reason) =>
        ok ? events.acked(token) : events.refused(token, `PUBACK 0x${reason.toString(16)}`),
      connected: () => {
        if (!up) connected++
        up = true
      },
    })
  })
  return {
    async start() {
      for (const c of clients) c.start()
    },
    send(device, token, reading) {
      clients[device].publish(token, Buffer.from(JSON.stringify(reading)))
    },
    get pending() {
      return clients.reduce((n, c) => n + c.pending, 0)
    },
    get connected() {
      return connected
    },
    async stop() {
      await Promise.all(clients.map((c) => c.close()))
    },
  }
}

interface Item {
  token: number
  reading: Record<string, unknown>
}

/** What a request-at-a-time sender makes of an answer: acked, refused (the reasons by index), or try again. */
type Verdict = { ok: true; refused?: Map<number, string> } | { ok: false; refused: string } | undefined

/**
 * A protocol of one request at a time per device (its readings in order): `batch` readings queued are sent in
 * one request, whose answer acks or refuses them; no answer, or one that says try again, is retried with
 * backoff, as a device would.
 */
function requestSender(
  devices: SimDevice[],
  events: SenderEvents,
  batch: number,
  request: (device: number, items: Item[]) => Promise<{ status: number; body: string }>,
  verdict: (status: number, body: string) => Verdict,
): Sender {
  const queues = devices.map(() => [] as Item[])
  const busy = devices.map(() => false)
  let stopped = false
  const pump = async (i: number): Promise<void> => {
    if (busy[i]) return
    busy[i] = true
    let failures = 0
    while (queues[i].length && !stopped) {
      const items = queues[i].slice(0, batch)
      let v: Verdict
      try {
        const r = await request(i, items)
        v = verdict(r.status, r.body)
      } catch {}
      if (v === undefined) {
        await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]))
        continue
      }
      queues[i].splice(0, items.length)
      failures = 0
      for (let k = 0; k < items.length; k++) {
        const why = v.ok ? v.refused?.get(k) : v.refused
        if (why === undefined) events.acked(items[k].token)
        else events.refused(items[k].token, why)
      }
    }
    busy[i] = false
  }
  return {
    async start() {},
    send(device, token, reading) {
      queues[device].push({ token, reading })
      void pump(device)
    },
    get pending() {
      return queues.reduce((n, q) => n + q.length, 0)
    },
    get connected() {
      return devices.length
    },
    async stop() {
      stopped = true
    },
  }
}

/** A 4xx other than these is the platform refusing what was sent; these say try again. */
const RETRY_4XX = new Set([403, 408, 409, 429])

/**
 * HTTP ingest: a device's queued readings (up to 100) as one JSON array, as the endpoint takes them (README
 * "Try it"): 202 acks them, but those its `errors` name, which were quarantined; another 4xx refuses them all.
 */
const httpSender: SenderFactory = (target, devices, events) =>
  requestSender(
    devices,
    events,
    100,
    async (i, items) => {
      const res = await fetch(`${target.url}/api/v1/devices/${devices[i].id}/telemetry`, {
        method: 'POST',
        headers: { authorization: `Bearer ${devices[i].token}`, 'content-type': 'application/json' },
        body: JSON.stringify(items.map((x) => x.reading)),
      })
      return { status: res.status, body: await res.text() }
    },
    (status, body) => {
      if (status === 202) {
        const errors = (JSON.parse(body) as { errors?: Array<{ index: number; reason: string }> }).errors
        return { ok: true, refused: errors && new Map(errors.map((e) => [e.index, `HTTP 202 ${e.reason}`])) }
      }
      if (status >= 400 && status < 500 && status !== 429 && status !== 409)
        return { ok: false, refused: `HTTP ${status} ${body.slice(0, 200)}` }
      return undefined
    },
  )

/** km/h in knots: OsmAnd's `speed` parameter is knots. */
const KMH_PER_KNOT = 1.852

/**
 * The OsmAnd protocol as Traccar Client sends it (README "Traccar Client (OsmAnd)"; Traccar's OsmAnd
 * protocol, https://www.traccar.org/osmand/): one fix per POST of a form to the OsmAnd port, `id` the device's
 * IMEI, `timestamp` in ms, `lat`, `lon`, `speed` in knots, `bearing`, and the vehicle's other values as
 * parameters of their own names (kept so by the gateway). 200 acks it; 400 refuses it (quarantined); 403 (an
 * IMEI this gateway does not know yet), 429 and the rest are tried again.
 */
const osmandSender: SenderFactory = (target, devices, events) => {
  const base = `http://${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.osmandPort}/`
  return requestSender(
    devices,
    events,
    1,
    async (i, [item]) => {
      const { ts, msgId: _, speed, heading, ...rest } = item.reading
      const form = new URLSearchParams({ id: devices[i].imei, timestamp: String(ts) })
      if (typeof speed === 'number') form.set('speed', String(Math.round((speed / KMH_PER_KNOT) * 1e4) / 1e4))
      if (typeof heading === 'number') form.set('bearing', String(heading))
      for (const [k, v] of Object.entries(rest)) form.set(k, String(v))
      const res = await fetch(base, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      })
      return { status: res.status, body: await res.text() }
    },
    (status, body) => {
      if (status === 200) return { ok: true }
      if (status >= 400 && status < 500 && !RETRY_4XX.has(status))
        return { ok: false, refused: `HTTP ${status} ${body.slice(0, 200)}` }
      return undefined
    },
  )
}

/** The protocols `iotcore simulate --protocol` knows. */
export const SENDERS: Record<string, Protocol> = {
  mqtt: { create: mqttSender },
  http: { create: httpSender },
  teltonika: {
    create: teltonikaSender,
    needsImei: 'a Teltonika tracker is known by',
    noSeq: "Teltonika's Codec 8 Extended records carry no sequence number",
  },
  osmand: { create: osmandSender, needsImei: 'an OsmAnd device is known by' },
  jsonl: { create: jsonlSender },
}
