/**
 * Teltonika test devices: the packets of Teltonika's documentation, the encoder for packets of any records (the
 * simulator's, src/simulate/teltonika.ts, which the bench's load generator uses too), and a raw TCP client that
 * speaks the handshake and keeps every byte the server sends.
 */
import { readFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { imeiFrame } from '../../src/simulate/teltonika.js'
import type { Platform } from './index.js'
import { LIVENESS_MS, onceConnected, RawSocket } from './socket.js'

export { LIVENESS_MS }

export {
  avlData,
  avlPacket,
  frame,
  imeiFrame,
  messagePacket,
  udpDatagram,
} from '../../src/simulate/teltonika.js'

/**
 * The hex examples of "Teltonika Data Sending Protocols" (https://wiki.teltonika-gps.com/view/Teltonika_Data_Sending_Protocols),
 * each under the section it comes from, as the documentation prints them.
 */
export const DOCS = {
  /** Codec 8, 1st example: one record, IO elements of 1, 2, 4 and 8 bytes. Ack 00000001. */
  codec8a:
    '000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF',
  /** Codec 8, 2nd example: one record, 1- and 2-byte IO elements. */
  codec8b:
    '000000000000002808010000016B40D9AD80010000000000000000000000000000000103021503010101425E100000010000F22A',
  /** Codec 8, 3rd example: two records. Ack 00000002. */
  codec8c:
    '000000000000004308020000016B40D57B480100000000000000000000000000000001010101000000000000016B40D5C198010000000000000000000000000000000101010101000000020000252C',
  /** Codec 8 Extended example: one record, 2-byte ids, IO elements of 1, 2, 4 and 8 bytes. */
  codec8e:
    '000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994',
  /** Codec 16 example: two records with a generation type. */
  codec16:
    '000000000000005F10020000016BDBC7833000000000000000000000000000000000000B05040200010000030002000B00270042563A00000000016BDBC7871800000000000000000000000000000000000B05040200010000030002000B00260042563A00000200005FB3',
  /** Codec 12: the server's `getinfo` command. */
  codec12Getinfo: '000000000000000F0C010500000007676574696E666F0100004312',
  /** Codec 12: the device's response to it. */
  codec12Response:
    '00000000000000900C010600000088494E493A323031392F372F323220373A3232205254433A323031392F372F323220373A3533205253543A32204552523A312053523A302042523A302043463A302046473A3020464C3A302054553A302F302055543A3020534D533A30204E4F4750533A303A3330204750533A31205341543A302052533A332052463A36352053463A31204D443A30010000C78F',
  codec12ResponseText:
    'INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 FL:0 TU:0/0 UT:0 SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0',
  /** Codec 13: a `getinfo` message with its 4-byte timestamp. */
  codec13: '00000000000000130D01050000000B0A81C320676574696E666F010000ED9B',
  /** Codec 8 over UDP: IMEI 352093086403655, Packet ID CAFE, AVL packet ID 05; answered 0005CAFE010501. */
  udpCodec8:
    '003DCAFE0105000F33353230393330383634303336353508010000016B4F815B30010000000000000000000000000000000103021503010101425DBC000001',
  udpCodec8Ack: '0005cafe010501',
  /** Codec 8 Extended over UDP: the same IMEI, AVL packet ID 07. */
  udpCodec8e:
    '005FCAFE0107000F3335323039333038363430333635358E010000016B4F831C680100000000000000000000000000000000010005000100010100010011009D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A000001',
  udpCodec8eAck: '0005cafe010701',
  /** The IMEI of the UDP examples (and of the TCP handshake example, 000F333536333037303432343431303133). */
  udpImei: '352093086403655',
} as const

export const hex = (h: string): Buffer => Buffer.from(h, 'hex')

let trackers = 0

/** A tracker registered through the API with a fresh IMEI (15 digits, unique within the test process). */
export async function tracker(p: Platform): Promise<{ id: string; imei: string }> {
  const imei = `35${String(process.pid % 100000).padStart(5, '0')}${String(trackers++).padStart(8, '0')}`
  const { id } = await p.createDevice('tracker', { imei })
  return { id, imei }
}

/** A device over raw TCP: writes any bytes, keeps every byte the server sends, knows when it is closed. */
export class RawTeltonika extends RawSocket {
  private taken = 0

  /** `localAddress`: another loopback address (127.0.0.2, ...) to connect from, to be another source. */
  static open(port: number, localAddress?: string): Promise<RawTeltonika> {
    const socket = netConnect({ host: '127.0.0.1', port, noDelay: true, localAddress })
    return onceConnected(socket, (s) => new RawTeltonika(s))
  }

  /** Opens a TLS connection that trusts the CA in the PEM file `ca`, for 127.0.0.1. */
  static openTls(port: number, ca: string): Promise<RawTeltonika> {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca) })
    return onceConnected(socket, (s) => new RawTeltonika(s), true)
  }

  /** Opens a connection and sends the IMEI; resolves with the connection and the server's one-byte answer. */
  static async handshake(
    port: number,
    imei: string,
    localAddress?: string,
  ): Promise<{ dev: RawTeltonika; answer: number }> {
    const dev = await RawTeltonika.open(port, localAddress)
    dev.write(imeiFrame(imei))
    const answer = (await dev.read(1))[0]
    return { dev, answer }
  }

  /** Opens and completes the handshake of a registered device. */
  static async connected(port: number, imei: string): Promise<RawTeltonika> {
    const { dev, answer } = await RawTeltonika.handshake(port, imei)
    if (answer !== 0x01) throw new Error(`the IMEI ${imei} was answered ${answer}`)
    return dev
  }

  write(bytes: Buffer): void {
    if (!this.closed && this.socket.writable) this.socket.write(bytes)
  }

  /** Writes `bytes` in pieces of `size`, each its own TCP segment (a write after the last was flushed). */
  async trickle(bytes: Buffer, size: number): Promise<void> {
    for (let i = 0; i < bytes.length; i += size) {
      await new Promise<void>((r) => this.socket.write(bytes.subarray(i, i + size), () => r()))
      await new Promise((r) => setTimeout(r, 1))
    }
  }

  /** The next `n` bytes the server sends; rejects if the connection closes first or nothing comes in time. */
  async read(n: number, ms = LIVENESS_MS): Promise<Buffer> {
    await this.until(() => this.data.length - this.taken >= n, ms)
    const have = this.data.length - this.taken
    if (have < n)
      throw new Error(this.closed ? `closed after ${have} of ${n} bytes` : `no ${n} bytes within ${ms} ms`)
    const out = this.data.subarray(this.taken, this.taken + n)
    this.taken += n
    return Buffer.from(out)
  }

  /** Every byte received and not yet read. */
  rest(): Buffer {
    const out = this.data.subarray(this.taken)
    this.taken = this.data.length
    return Buffer.from(out)
  }
}

/** Bytes as GET /quarantine shows a payload: the text when they are UTF-8, else base64. */
export function shown(b: Buffer): string {
  const text = b.toString('utf8')
  return Buffer.from(text, 'utf8').equals(b) ? text : b.toString('base64')
}

/** A 4-byte TCP ack as hex. */
export const ackHex = (records: number): string => records.toString(16).padStart(8, '0')
