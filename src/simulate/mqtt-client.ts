import { type Socket, connect } from 'node:net'
import mqtt, { type Packet } from 'mqtt-packet'

/**
 * A lean MQTT 5 device for the simulator, on `mqtt-packet` (already the gateway's parser): QoS 1 publishes with
 * a window of the server's Receive Maximum, PUBACK reason codes read (MQTT 5.0 §3.4.2.1: 0x80 and above is a
 * refusal), reconnection with backoff, and every unacknowledged publish sent again after a reconnect. MQTT.js
 * would do as a client, but is a development dependency here and costs several times the CPU per message.
 */
export interface PublishEvents {
  /** The PUBACK came: `ok` unless its reason code is a refusal. */
  acked(token: number, ok: boolean, reason: number): void
  connected?(): void
  /** CONNACK refused the credentials (or anything else): tries again later. */
  refused?(reason: number): void
}

interface Pending {
  token: number
  payload: Buffer
}

const BACKOFF_MAX_MS = 5000
const KEEPALIVE_S = 60
/** Packets are written as version 5 (mqtt-packet writes 3.1.1 unless told). */
const V5 = { protocolVersion: 5 } as const

export class MqttDevice {
  private socket: Socket | undefined
  private ready = false
  private closed = false
  private nextId = 1
  /** Sent, waiting for their PUBACK, by packet id. */
  private readonly inflight = new Map<number, Pending>()
  /** Not sent yet: the window is full or the connection is down. */
  private queue: Pending[] = []
  private window = 100
  private backoff = 250
  private timer: NodeJS.Timeout | undefined
  private ping: NodeJS.Timeout | undefined

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly id: string,
    private readonly token: string,
    private readonly topic: string,
    private readonly events: PublishEvents,
  ) {}

  get connected(): boolean {
    return this.ready
  }

  get pending(): number {
    return this.inflight.size + this.queue.length
  }

  start(): void {
    if (this.closed) return
    const socket = connect(this.port, this.host)
    this.socket = socket
    socket.setNoDelay(true)
    const parser = mqtt.parser({ protocolVersion: 5 })
    parser.on('packet', (p: Packet) => this.onPacket(p))
    parser.on('error', () => socket.destroy())
    socket.on('data', (d) => parser.parse(d))
    socket.on('error', () => {})
    socket.on('close', () => this.onClose(socket))
    socket.on('connect', () => {
      socket.write(
        mqtt.generate(
          {
            cmd: 'connect',
            protocolId: 'MQTT',
            protocolVersion: 5,
            clean: true,
            clientId: this.id,
            keepalive: KEEPALIVE_S,
            username: this.id,
            password: Buffer.from(this.token),
          },
          V5,
        ),
      )
    })
  }

  /** Queues a QoS 1 publish; `token` comes back in the ack event. */
  publish(token: number, payload: Buffer): void {
    this.queue.push({ token, payload })
    this.flush()
  }

  close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    clearInterval(this.ping)
    const s = this.socket
    if (!s || s.destroyed) return Promise.resolve()
    return new Promise((resolve) => {
      s.once('close', () => resolve())
      if (this.ready) s.end(mqtt.generate({ cmd: 'disconnect', reasonCode: 0 }, V5))
      else s.destroy()
    })
  }

  private onPacket(p: Packet): void {
    if (p.cmd === 'connack') {
      if ((p.reasonCode ?? p.returnCode ?? 0) !== 0) {
        this.events.refused?.(p.reasonCode ?? p.returnCode ?? 0)
        this.backoff = BACKOFF_MAX_MS
        this.socket?.destroy()
        return
      }
      this.ready = true
      this.backoff = 250
      this.window = p.properties?.receiveMaximum ?? 100
      this.ping = setInterval(
        () => this.socket?.write(mqtt.generate({ cmd: 'pingreq' }, V5)),
        (KEEPALIVE_S / 2) * 1000,
      )
      this.ping.unref()
      // What the lost connection had in flight goes first, as new publishes: a device resends the same reading
      // (same msgId), and the platform stores it once.
      this.queue = [...this.inflight.values(), ...this.queue]
      this.inflight.clear()
      this.events.connected?.()
      this.flush()
    } else if (p.cmd === 'puback') {
      const pending = this.inflight.get(p.messageId!)
      if (!pending) return
      this.inflight.delete(p.messageId!)
      const reason = p.reasonCode ?? 0
      this.events.acked(pending.token, reason < 0x80, reason)
      this.flush()
    }
  }

  private flush(): void {
    if (!this.ready || !this.socket) return
    const socket = this.socket
    socket.cork()
    while (this.queue.length && this.inflight.size < this.window) {
      const item = this.queue.shift()!
      while (this.inflight.has(this.nextId)) this.nextId = (this.nextId % 65535) + 1
      const id = this.nextId
      this.nextId = (this.nextId % 65535) + 1
      this.inflight.set(id, item)
      socket.write(
        mqtt.generate(
          {
            cmd: 'publish',
            topic: this.topic,
            payload: item.payload,
            qos: 1,
            retain: false,
            dup: false,
            messageId: id,
          },
          V5,
        ),
      )
    }
    process.nextTick(() => socket.uncork())
  }

  private onClose(socket: Socket): void {
    if (socket !== this.socket) return
    this.ready = false
    clearInterval(this.ping)
    if (this.closed) return
    this.timer = setTimeout(() => this.start(), this.backoff)
    this.timer.unref()
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS)
  }
}
