import { MqttDevice } from './mqtt-client.js'

/**
 * How the simulator's devices talk to the platform: one sender per protocol, all behind this interface, so a
 * protocol is one more entry in SENDERS. A sender takes readings with a token and reports each token once:
 * acked (durably queued by the platform) or refused (the platform said no, and resending will not help).
 * Anything else (a connection lost, a 503) it retries itself, as a device would.
 */
export interface SimDevice {
  id: string
  token: string
}

export interface SenderEvents {
  acked(token: number): void
  refused(token: number, why: string): void
}

export interface Target {
  /** The platform's HTTP base URL. */
  url: string
  mqttHost: string
  mqttPort: number
}

export interface Sender {
  /** Connects (where the protocol has connections); resolves once each device is connected or refused. */
  start(): Promise<void>
  send(device: number, token: number, reading: Record<string, unknown>): void
  /** Readings handed over and not yet acked or refused. */
  readonly pending: number
  readonly connected: number
  stop(): Promise<void>
}

export type SenderFactory = (target: Target, devices: SimDevice[], events: SenderEvents) => Sender

const RETRY_MS = [250, 500, 1000, 2000, 5000]

/** MQTT 5 over TCP, one connection per device, QoS 1 on devices/<id>/telemetry. */
const mqttSender: SenderFactory = (target, devices, events) => {
  let connected = 0
  const clients = devices.map((d) => {
    let up = false
    return new MqttDevice(target.mqttHost, target.mqttPort, d.id, d.token, `devices/${d.id}/telemetry`, {
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

/**
 * HTTP ingest, one request at a time per device (its readings in order): 202 is an ack, another 4xx a refusal
 * (quarantined by the platform), a 5xx or a network error is retried with backoff.
 */
const httpSender: SenderFactory = (target, devices, events) => {
  const queues = devices.map(() => [] as Array<{ token: number; body: string }>)
  const busy = devices.map(() => false)
  let stopped = false
  const pump = async (i: number): Promise<void> => {
    if (busy[i]) return
    busy[i] = true
    let failures = 0
    while (queues[i].length && !stopped) {
      const item = queues[i][0]
      let status = 0
      let detail = ''
      try {
        const res = await fetch(`${target.url}/api/v1/devices/${devices[i].id}/telemetry`, {
          method: 'POST',
          headers: { authorization: `Bearer ${devices[i].token}`, 'content-type': 'application/json' },
          body: item.body,
        })
        status = res.status
        detail = await res.text()
      } catch {}
      if (status === 202 || (status >= 400 && status < 500 && status !== 429 && status !== 409)) {
        queues[i].shift()
        failures = 0
        if (status === 202) events.acked(item.token)
        else events.refused(item.token, `HTTP ${status} ${detail.slice(0, 200)}`)
      } else {
        await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]))
      }
    }
    busy[i] = false
  }
  return {
    async start() {},
    send(device, token, reading) {
      queues[device].push({ token, body: JSON.stringify(reading) })
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

/** The protocols `iotcore simulate --protocol` knows. */
export const SENDERS: Record<string, SenderFactory> = {
  mqtt: mqttSender,
  http: httpSender,
}
