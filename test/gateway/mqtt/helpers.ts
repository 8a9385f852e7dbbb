/**
 * Real clients for the MQTT gateway tests, MQTT.js and mosquitto_pub, and what a test asks the API about
 * their readings. The raw client is test/helpers/mqtt-raw.ts.
 */
import { execFile } from 'node:child_process'
import { after, before } from 'node:test'
import { type IClientOptions, type IConnackPacket, type MqttClient, connect } from 'mqtt'
import { type Platform, startPlatform } from '../../helpers/index.js'
import { type Device, LIVENESS_MS, RawMqtt } from '../../helpers/mqtt-raw.js'

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

/**
 * One platform for the tests of a file (created inside its describe), and the clients they open, closed when
 * the file's tests are done.
 */
export class MqttSuite {
  p!: Platform
  private readonly clients: MqttClient[] = []
  private readonly raws: RawMqtt[] = []

  constructor(env: Record<string, string> = {}) {
    before(async () => {
      this.p = await startPlatform(env)
    })
    after(async () => {
      for (const c of this.clients) c.end(true)
      for (const r of this.raws) r.destroy()
      await this.p.stop()
    })
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.p.mqttPort}`
  }

  /** MQTT.js, connected with the device's credentials. */
  async client(version: 4 | 5, dev: Device, opts: IClientOptions = {}): Promise<MqttClient> {
    return this.track((await openClient(this.url, version, dev, opts)).client)
  }

  /** A raw client: connected with the device's credentials if one is given, else only opened. */
  async raw(version: 4 | 5, dev?: Device, extra?: Record<string, unknown>): Promise<RawMqtt> {
    const port = this.p.mqttPort
    return this.track(
      dev ? await RawMqtt.connected(port, version, dev, extra) : await RawMqtt.open(port, version),
    )
  }

  /** Closes a client opened another way when the file's tests are done. */
  track<T extends MqttClient | RawMqtt>(c: T): T {
    if (c instanceof RawMqtt) this.raws.push(c)
    else this.clients.push(c as MqttClient)
    return c
  }
}
