/**
 * The one raw MQTT test client: a TCP socket that writes whatever packets or bytes a test wants and keeps every
 * byte the server sends, split into whole packets, read back as bytes or parsed with mqtt-packet.
 */
import { type Socket, connect as netConnect } from 'node:net'
import mqttPacket from 'mqtt-packet'
import { LIVENESS_MS, onceConnected, RawSocket } from './socket.js'

export { LIVENESS_MS }

export type AnyPacket = mqttPacket.Packet & Record<string, any>
export interface Device {
  id: string
  token: string
}

/** Size of the whole packet at `buf[pos]`, or 0 if it is not complete there (or its length is malformed). */
export function packetSize(buf: Buffer, pos: number): number {
  let len = 0
  let mult = 1
  for (let i = pos + 1; i < pos + 5 && i < buf.length; i++) {
    len += (buf[i] & 127) * mult
    mult *= 128
    if ((buf[i] & 128) === 0) return i + 1 + len <= buf.length ? i + 1 - pos + len : 0
  }
  return 0
}

/** Splits a byte stream into its whole packets (up to the first incomplete or malformed one). */
export function splitPackets(buf: Buffer): Buffer[] {
  const out: Buffer[] = []
  let pos = 0
  for (let n = packetSize(buf, pos); n > 0; n = packetSize(buf, pos)) {
    out.push(buf.subarray(pos, pos + n))
    pos += n
  }
  return out
}

export class RawMqtt extends RawSocket {
  /** Bytes of `data` already handed out by `next` / `nextRaw`. */
  private taken = 0

  private constructor(
    socket: Socket,
    /** Protocol level the client speaks: 3 (MQTT 3.1), 4 (3.1.1) or 5. */
    readonly version: 3 | 4 | 5,
  ) {
    super(socket)
  }

  static open(port: number, version: 3 | 4 | 5 = 4): Promise<RawMqtt> {
    const socket = netConnect({ host: '127.0.0.1', port, noDelay: true })
    return onceConnected(socket, (s) => new RawMqtt(s, version))
  }

  /** Opens, sends CONNECT with the device's credentials, and checks the CONNACK accepts it. */
  static async connected(
    port: number,
    version: 3 | 4 | 5,
    dev: Device,
    extra: Record<string, unknown> = {},
  ): Promise<RawMqtt> {
    const c = await RawMqtt.open(port, version)
    c.send(c.connectPacket(dev, extra))
    const ack = await c.next()
    const rc = version === 5 ? ack.reasonCode : ack.returnCode
    if (ack.cmd !== 'connack' || rc !== 0) {
      c.destroy()
      throw new Error(`CONNECT refused: ${JSON.stringify(ack)}`)
    }
    return c
  }

  connectPacket(dev: Device, extra: Record<string, unknown> = {}): AnyPacket {
    return {
      cmd: 'connect',
      protocolId: this.version === 3 ? 'MQIsdp' : 'MQTT',
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
    this.write(this.encode(packet))
  }

  write(bytes: Buffer): void {
    if (!this.closed && this.socket.writable) this.socket.write(bytes)
  }

  /** The bytes of the next whole packet from the server, or undefined if none came within `ms` or it closed. */
  async nextRaw(ms = LIVENESS_MS): Promise<Buffer | undefined> {
    await this.until(() => packetSize(this.data, this.taken) > 0, ms)
    const n = packetSize(this.data, this.taken)
    if (n === 0) return undefined
    const pk = this.data.subarray(this.taken, this.taken + n)
    this.taken += n
    return pk
  }

  /** The next packet from the server, parsed; rejects if the connection closes first or nothing comes in time. */
  async next(ms = LIVENESS_MS): Promise<AnyPacket> {
    const raw = await this.nextRaw(ms)
    if (raw === undefined)
      throw new Error(this.closed ? 'connection closed' : 'no packet from the server in time')
    let parsed: AnyPacket | undefined
    const parser = mqttPacket.parser({ protocolVersion: this.version === 5 ? 5 : 4 })
    parser.on('packet', (pk: AnyPacket) => (parsed = pk))
    parser.on('error', (err: Error) => {
      throw new Error(
        `the server sent a packet mqtt-packet cannot parse (${raw.toString('hex')}): ${err.message}`,
      )
    })
    parser.parse(raw)
    if (!parsed) throw new Error(`not a whole packet: ${raw.toString('hex')}`)
    return parsed
  }

  /** Every whole packet the server sent so far, taken or not. */
  received(): Buffer[] {
    return splitPackets(this.data)
  }
}
