/** Clients for the MQTT gateway tests: MQTT.js, mosquitto_pub, and a raw socket speaking mqtt-packet. */
import { execFile } from 'node:child_process'
import { type Socket, connect as netConnect } from 'node:net'
import { type IClientOptions, type IConnackPacket, type MqttClient, connect } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { type Platform, waitFor } from '../helpers/index.js'

export type AnyPacket = mqttPacket.Packet & Record<string, any>
export interface Device {
  id: string
  token: string
}

/** How long a test waits for something the gateway should do: a liveness bound, not a timing assertion. */
export const LIVENESS_MS = 15_000

/**
 * Connects MQTT.js (no reconnects) and resolves with the client and its CONNACK, or rejects with the
 * refusal (MQTT.js puts the CONNACK code in `err.code`).
 */
export function openClient(
  url: string,
  version: 4 | 5,
  dev: Partial<Device>,
  opts: IClientOptions = {},
): Promise<{ client: MqttClient; connack: IConnackPacket }> {
  return new Promise((resolve, reject) => {
    const client = connect(url, {
      protocolVersion: version,
      username: dev.id,
      password: dev.token,
      reconnectPeriod: 0,
      connectTimeout: LIVENESS_MS,
      ...opts,
    })
    client.once('connect', (connack) => resolve({ client, connack }))
    client.once('error', (err) => {
      client.end(true)
      reject(err)
    })
    client.once('close', () => reject(new Error('connection closed before CONNACK')))
  })
}

/** Resolves once the client's connection is closed (by either side). */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (!client.connected && client.disconnected) return resolve()
    client.once('close', () => resolve())
  })
}

/** Publishes with MQTT.js and resolves with the error (a v5 reason code in `code`) or undefined. */
export function publish(
  client: MqttClient,
  topic: string,
  payload: string | Buffer,
  qos: 0 | 1 | 2,
): Promise<(Error & { code?: number }) | undefined> {
  return new Promise((resolve) => client.publish(topic, payload, { qos }, (err) => resolve(err ?? undefined)))
}

/** Runs mosquitto_pub; resolves with its exit code and output (never rejects on a non-zero exit). */
export function mosquittoPub(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/mosquitto_pub', args, { timeout: LIVENESS_MS }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** The points of one key, oldest first. */
export async function series(p: Platform, deviceId: string, key: string): Promise<any[]> {
  const r = await p.req('GET', `/api/v1/devices/${deviceId}/telemetry?keys=${key}&order=asc`)
  if (r.status !== 200) throw new Error(`telemetry query: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body[key] ?? []
}

/** Quarantine items of one device and reason, newest first. */
export async function quarantined(p: Platform, deviceId: string, reason: string): Promise<any[]> {
  const r = await p.req('GET', `/api/v1/quarantine?deviceId=${deviceId}&reason=${reason}`)
  if (r.status !== 200) throw new Error(`quarantine query: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.items
}

/**
 * A bare TCP MQTT client: writes whatever packets or bytes a test wants, and hands back what the server
 * sends, in order, parsed with the protocol version it was opened with.
 */
export class RawMqtt {
  readonly packets: AnyPacket[] = []
  isClosed = false
  private readonly parser: ReturnType<typeof mqttPacket.parser>
  private wake: (() => void) | undefined
  readonly closedPromise: Promise<void>

  private constructor(
    readonly socket: Socket,
    readonly version: 4 | 5,
  ) {
    this.parser = mqttPacket.parser({ protocolVersion: version })
    this.parser.on('packet', (pk: AnyPacket) => {
      this.packets.push(pk)
      this.notify()
    })
    socket.on('data', (d) => this.parser.parse(d))
    socket.on('error', () => {})
    this.closedPromise = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true
        this.notify()
        resolve()
      }),
    )
  }

  static open(port: number, version: 4 | 5 = 4): Promise<RawMqtt> {
    return new Promise((resolve, reject) => {
      const s = netConnect({ host: '127.0.0.1', port, noDelay: true }, () => {
        s.off('error', reject)
        resolve(new RawMqtt(s, version))
      })
      s.once('error', reject)
    })
  }

  /** Opens, sends CONNECT with the device's credentials, and checks the CONNACK accepts it. */
  static async connected(
    port: number,
    version: 4 | 5,
    dev: Device,
    extra: Record<string, unknown> = {},
  ): Promise<RawMqtt> {
    const c = await RawMqtt.open(port, version)
    c.send(c.connectPacket(dev, extra))
    const ack = await c.next()
    const rc = version === 5 ? ack.reasonCode : ack.returnCode
    if (ack.cmd !== 'connack' || rc !== 0) throw new Error(`CONNECT refused: ${JSON.stringify(ack)}`)
    return c
  }

  connectPacket(dev: Device, extra: Record<string, unknown> = {}): AnyPacket {
    return {
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: this.version,
      clean: true,
      clientId: `raw-${Math.random().toString(36).slice(2, 10)}`,
      keepalive: 60,
      username: dev.id,
      password: Buffer.from(dev.token),
      ...extra,
    } as AnyPacket
  }

  encode(packet: AnyPacket): Buffer {
    return mqttPacket.generate(packet, { protocolVersion: this.version })
  }

  send(packet: AnyPacket): void {
    this.socket.write(this.encode(packet))
  }

  write(buf: Buffer): void {
    this.socket.write(buf)
  }

  /** The next packet from the server; rejects if the connection closes first or nothing comes in time. */
  async next(ms = LIVENESS_MS): Promise<AnyPacket> {
    const deadline = Date.now() + ms
    for (;;) {
      const pk = this.packets.shift()
      if (pk) return pk
      if (this.isClosed) throw new Error('connection closed')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('no packet from the server in time')
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(t)
          resolve()
        }
      })
    }
  }

  /** Waits for the server to close the connection; rejects if it does not within the bound. */
  async waitClosed(ms = LIVENESS_MS): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.closedPromise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('the server did not close the connection')), ms)
      }),
    ]).finally(() => clearTimeout(timer))
  }

  destroy(): void {
    this.socket.destroy()
  }

  private notify(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }
}

/** waitFor that returns the value `fn` found, typed without the falsy cases. */
export async function until<T>(
  fn: () => Promise<T | undefined | false | null>,
  what = 'condition',
  ms = LIVENESS_MS,
): Promise<T> {
  return (await waitFor(fn, ms, what)) as T
}
