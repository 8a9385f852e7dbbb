import { type RemoteInfo, type Socket, createSocket } from 'node:dgram'
import type { AckSink } from '../../queue/types.js'
import { decodeAvl, parseUdp, udpAck } from './codec.js'
import type { TeltonikaGateway } from './gateway.js'

/**
 * Datagrams appended and not yet acked, at most: each holds its sender's address until its ack. Past it a
 * datagram is dropped unanswered and the device sends it again, as after any lost datagram.
 */
export const MAX_UDP_PENDING = 10_000

interface Pending {
  address: string
  port: number
  packetId: number
  avlPacketId: number
}

/**
 * Teltonika over UDP on the TCP port's number ([TDSP Codec 8 / UDP channel]): every datagram names its IMEI and
 * carries one AVL data array, answered (once its readings are durably queued) with the UDP ack naming its
 * Packet ID and AVL packet ID. There is no connection, so no handshake answer: a datagram from an unknown IMEI,
 * or one that is not a Teltonika datagram, is dropped unanswered and counted against its address.
 */
export class TeltonikaUdp implements AckSink {
  private socket: Socket | undefined
  private readonly pending = new Map<number, Pending>()
  private token = 0
  private acked = 0
  port = 0

  constructor(private readonly gw: TeltonikaGateway) {}

  /** Binds `port` on `host`; rejects with the bind error (EADDRINUSE when the number is taken for UDP). */
  async bind(host: string, port: number): Promise<void> {
    const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind(port, host, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    socket.on('error', (err) => this.gw.log.error({ err }, 'Teltonika UDP socket error'))
    socket.on('message', (msg, rinfo) => this.datagram(msg, rinfo))
    this.socket = socket
    this.port = socket.address().port
  }

  async close(): Promise<void> {
    const s = this.socket
    this.socket = undefined
    if (s) await new Promise<void>((r) => s.close(() => r()))
    this.pending.clear()
  }

  private datagram(msg: Buffer, from: RemoteInfo): void {
    const gw = this.gw
    if (gw.refusals.limit(from.address)) return
    try {
      const d = parseUdp(msg)
      if (!d.ok) return gw.refused(from.address, `a datagram that is not Teltonika's: ${d.why}`)
      const cred = gw.credentials.byImeiLookup(d.imei)
      if (!cred) return gw.refused(from.address, `IMEI ${d.imei} is not registered`, d.imei)
      const avl = decodeAvl(msg, d.dataStart, msg.length)
      if (!avl.ok) return gw.malformedFrom(cred.id, 'udp', msg, avl.why)
      if (this.pending.size >= MAX_UDP_PENDING) return
      const token = this.token++ & 0x7fffffff
      const env = gw.avlEnvelope(cred.id, msg, avl.records)
      gw.enqueue(env, this, token, avl.records.length)
      this.pending.set(token, {
        address: from.address,
        port: from.port,
        packetId: d.packetId,
        avlPacketId: d.avlPacketId,
      })
    } catch (err) {
      // A full queue refuses the append (the device sends it again); a fault of ours drops the one datagram.
      gw.log.warn({ err: (err as Error).message, address: from.address }, 'Teltonika datagram not queued')
    }
  }

  // ---- AckSink

  cork(): void {}

  ack(token: number, count: number, err: Error | undefined): void {
    const p = this.pending.get(token)
    this.pending.delete(token)
    if (!p || err || !this.socket) return
    this.acked += count
    this.socket.send(udpAck(p.packetId, p.avlPacketId, count), p.port, p.address)
  }

  uncork(): void {
    if (this.acked > 0) this.gw.metrics.acked.inc({ transport: 'teltonika' }, this.acked)
    this.acked = 0
  }
}
