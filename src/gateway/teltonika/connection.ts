import type { Duplex } from 'node:stream'
import type { CommandEvents, OutboundCommand } from '../commands.js'
import type { AckSink } from '../../queue/types.js'
import {
  CODEC,
  Frame,
  HEADER,
  IMEI_ACCEPTED,
  IMEI_REFUSED,
  MESSAGE_TYPE,
  TRAILER,
  crcMatches,
  decodeAvl,
  decodeCodec12,
  decodeCodec13,
  encodeCommand,
  isAvlCodec,
  scanHandshake,
  scanTcp,
  tcpAck,
} from './codec.js'
import type { TeltonikaGateway } from './gateway.js'

export const ConnState = { handshake: 0, open: 1, closed: 2 } as const
export type ConnState = (typeof ConnState)[keyof typeof ConnState]

/**
 * Packets a connection may have waiting for their durable append before it stops reading. A device sends one
 * packet and waits for its ack ([TDSP Codec 8 / Communication with server]); this bounds what one that does not
 * wait can make the gateway hold.
 */
export const MAX_INFLIGHT = 16
/**
 * How long a Codec 12 command waits for its response before the next one goes. A device answers a command it
 * understands or not within seconds; a minute covers a slow cellular link. A response after that would be
 * taken for the next command's (Codec 12 carries no command id): only a device that stopped answering meets it.
 */
export const COMMAND_REPLY_MS = 60_000

interface Command {
  cmd: OutboundCommand
  events: CommandEvents
  /** Written to the connection, and reported delivered. */
  written?: boolean
}

/**
 * One Teltonika device over TCP: the IMEI handshake, then packets, each acked with its record count once its
 * readings are durably queued (the queue's AckSink). Bytes of an unfinished frame are kept (at most one frame,
 * bounded by MAX_DATA_LENGTH) and must be completed before `deadline`.
 */
export class TeltonikaConnection implements AckSink {
  state: ConnState = ConnState.handshake
  deviceId = ''
  imei = ''
  readonly address: string
  /** ms since the epoch by which the frame (or handshake) under way must be complete; 0: none is. */
  deadline: number
  /** Packets appended and not yet acked. */
  inflight = 0
  private pending: Buffer | null = null
  private paused = false
  /** Record counts of the acks of the commit being reported (between cork and uncork). */
  private acks: number[] | null = null
  private ackedReadings = 0
  /** Set when the connection is to close once the packets it already took are acked: why it closes. */
  private closing: string | null = null
  private outstanding: (Command & { timer: NodeJS.Timeout }) | null = null
  private readonly waiting: Command[] = []

  constructor(
    readonly gw: TeltonikaGateway,
    private readonly socket: Duplex & { remoteAddress?: string },
  ) {
    this.address = socket.remoteAddress ?? ''
    this.deadline = Date.now() + gw.timeoutMs
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', () => this.teardown())
    socket.on('close', () => this.teardown())
    socket.on('end', () => this.teardown())
  }

  // ---- input

  private onData(chunk: Buffer): void {
    if (this.state === ConnState.closed || this.closing !== null) return
    const fresh = this.pending === null
    const data = fresh ? chunk : Buffer.concat([this.pending!, chunk])
    this.pending = null
    let pos = 0
    try {
      pos = this.consume(data)
    } catch (err) {
      // A fault of ours must not take the listener down with it: close this connection only.
      this.gw.log.error({ err, deviceId: this.deviceId || undefined }, 'Teltonika packet handling failed')
      return this.close('internal error')
    }
    if (this.isClosed) return
    if (pos === data.length) {
      this.deadline = 0
      return
    }
    // Keep the rest as a copy: a view would pin the socket's whole read buffer. A packet begun in this read
    // starts its own deadline; one continued keeps the deadline it had, and the handshake the one from accept.
    this.pending = Buffer.from(data.subarray(pos))
    if ((pos > 0 || fresh) && this.state === ConnState.open) this.deadline = Date.now() + this.gw.timeoutMs
  }

  /** Handles every whole frame in `data`; returns where the unfinished rest begins. */
  private consume(data: Buffer): number {
    let pos = 0
    if (this.state === ConnState.handshake) {
      const h = scanHandshake(data, 0)
      if (h.kind === 'need') return 0
      if (h.kind === 'bad') {
        this.refuse(`the handshake sent ${h.why}`)
        return data.length
      }
      if (!this.authenticate(h.imei)) return data.length
      pos = h.end
    }
    const scan = this.gw.scan
    while (pos < data.length && this.state === ConnState.open) {
      scanTcp(data, pos, scan)
      switch (scan.kind) {
        case Frame.need:
          return pos
        case Frame.ping:
          pos = scan.end
          continue
        case Frame.garbage:
          this.malformed(data.subarray(pos), 'bytes that are not a Teltonika packet (no zero preamble)')
          return data.length
        case Frame.tooLong:
          this.malformed(
            data.subarray(pos, pos + HEADER),
            `a Data Field Length of ${scan.length} bytes; at most ${this.gw.maxDataLength}`,
          )
          return data.length
        default:
          this.packet(data, pos, scan.end)
          pos = scan.end
      }
    }
    return this.state === ConnState.open ? pos : data.length
  }

  /**
   * [TDSP Codec 8 / Communication with server] the IMEI is answered 0x01 for a registered device, 0x00 (and the
   * connection closed) otherwise.
   */
  private authenticate(imei: string): boolean {
    const cred = this.gw.credentials.byImeiLookup(imei)
    if (!cred) {
      this.refuse(`IMEI ${imei} is not registered`, imei)
      return false
    }
    this.imei = imei
    this.deviceId = cred.id
    this.state = ConnState.open
    this.write(IMEI_ACCEPTED)
    this.gw.authenticated(this)
    return true
  }

  private refuse(why: string, imei?: string): void {
    this.gw.refused(this.address, why, imei)
    this.write(IMEI_REFUSED)
    this.close(why)
  }

  /** One whole packet in data[pos, end), framing already checked. */
  private packet(data: Buffer, pos: number, end: number): void {
    if (!crcMatches(data, pos, end)) return this.gw.badCrc(this, Buffer.from(data.subarray(pos, end)))
    const start = pos + HEADER
    const stop = end - TRAILER
    const codec = data[start]
    if (isAvlCodec(codec)) {
      const avl = decodeAvl(data, start, stop)
      if (!avl.ok) return this.malformed(data.subarray(pos, end), avl.why)
      if (this.gw.appendAvl(this, data, avl.records)) this.inflight++
      if (this.inflight >= MAX_INFLIGHT) this.pause()
      return
    }
    if (codec === CODEC.c12) {
      const m = decodeCodec12(data, start, stop)
      if (!m.ok) return this.malformed(data.subarray(pos, end), m.why)
      if (m.type !== MESSAGE_TYPE.response)
        return this.malformed(data.subarray(pos, end), `a Codec 12 message of type 0x${m.type.toString(16)}`)
      // A response answers the command outstanding; one with none outstanding (a late answer, or text a
      // device sends by itself) is kept as a reading.
      if (this.outstanding) return this.replied(m.text)
      return this.gw.appendMessage(this, m.text, m.bytes, Date.now())
    }
    if (codec === CODEC.c13) {
      const m = decodeCodec13(data, start, stop)
      if (!m.ok) return this.malformed(data.subarray(pos, end), m.why)
      return this.gw.appendMessage(this, m.text, m.bytes, m.timestamp!)
    }
    this.malformed(data.subarray(pos, end), `unknown codec 0x${codec.toString(16).padStart(2, '0')}`)
  }

  /**
   * Broken framing or content: the bytes are quarantined (the device authenticated), nothing of them acked, and
   * the connection closed, once the packets taken before them are acked (they are stored either way; acked,
   * the device need not send them again).
   */
  private malformed(bytes: Uint8Array, why: string): void {
    this.gw.malformed(this, Buffer.from(bytes), why)
    if (this.inflight === 0) return this.close(why)
    this.closing = why
    this.pause()
  }

  // ---- durable acks (AckSink): the queue reports a commit as cork, ack per packet, uncork

  cork(): void {
    this.acks ??= []
  }

  ack(_token: number, count: number, err: Error | undefined): void {
    if (this.state === ConnState.closed) return
    if (err) {
      // Not acked: the device sends the records again, here or on its next connection.
      this.gw.log.warn({ deviceId: this.deviceId, err: err.message }, 'Teltonika packet not queued; closing')
      return this.close('the durable append failed')
    }
    this.inflight--
    this.ackedReadings += count
    if (this.acks !== null) this.acks.push(count)
    else this.write(tcpAck(count))
  }

  uncork(): void {
    const acks = this.acks
    this.acks = null
    if (this.ackedReadings > 0) {
      this.gw.metrics.acked.inc({ transport: 'teltonika' }, this.ackedReadings)
      this.ackedReadings = 0
    }
    if (acks === null || acks.length === 0 || this.state === ConnState.closed) return
    this.write(acks.length === 1 ? tcpAck(acks[0]) : Buffer.concat(acks.map(tcpAck)))
    if (this.closing !== null) {
      if (this.inflight === 0) this.close(this.closing)
      return
    }
    if (this.paused && this.inflight < MAX_INFLIGHT / 2) this.resume()
    this.pump()
  }

  // ---- commands (Codec 12)

  /**
   * Sends `cmd` now or after those before it; false if the connection is not open. Commands wait here
   * unbounded: the dispatcher hands over only what was queued through the API, a claim at a time
   * (gateway/dispatch.ts), and reads a false as the device gone from here.
   */
  command(cmd: OutboundCommand, events: CommandEvents): boolean {
    if (this.state !== ConnState.open) return false
    this.waiting.push({ cmd, events })
    this.pump()
    return true
  }

  /**
   * Sends the next command when none is outstanding and no packet waits for its ack: [TDSP Codec 12 /
   * Communication with server] commands go once "correct sent data array acknowledgment is received by the
   * device".
   */
  private pump(): void {
    if (this.outstanding || this.inflight > 0 || this.state !== ConnState.open) return
    const next = this.waiting.shift()
    if (!next) return
    const timer = setTimeout(() => this.noReply(), COMMAND_REPLY_MS)
    timer.unref()
    const c = (this.outstanding = { ...next, timer })
    this.socket.write(encodeCommand(c.cmd.name), (err) => {
      if (err || this.state === ConnState.closed) return
      c.written = true
      c.events.delivered(c.cmd.id)
    })
  }

  private replied(text: string): void {
    const c = this.outstanding!
    clearTimeout(c.timer)
    this.outstanding = null
    c.events.replied(c.cmd.id, 'ok', text)
    this.pump()
  }

  /** The device took the command and does not answer: it stays delivered, and the next one goes. */
  private noReply(): void {
    const c = this.outstanding
    if (!c || this.state === ConnState.closed) return
    this.outstanding = null
    this.gw.log.info(
      { deviceId: this.deviceId, command: c.cmd.id },
      `no Codec 12 response within ${COMMAND_REPLY_MS / 1000} s; the next command goes`,
    )
    this.pump()
  }

  // ---- flow control and closing

  private pause(): void {
    if (!this.paused) {
      this.paused = true
      this.socket.pause()
    }
  }

  private resume(): void {
    if (this.paused) {
      this.paused = false
      this.socket.resume()
      // The time it was not read is ours, not the device's: the frame under way gets its time again.
      if (this.pending !== null) this.deadline = Date.now() + this.gw.timeoutMs
    }
  }

  /** Bytes of the unfinished frame kept (at most one frame: MAX_DATA_LENGTH and its header and CRC). */
  get pendingBytes(): number {
    return this.pending?.length ?? 0
  }

  /** A method, not a comparison, so that TypeScript does not narrow `state` across the calls that close. */
  get isClosed(): boolean {
    return this.state === ConnState.closed
  }

  /** True while the gateway does not read this connection (its appends are behind): no deadline runs. */
  get isPaused(): boolean {
    return this.paused
  }

  write(buf: Buffer): void {
    if (this.socket.writable) this.socket.write(buf)
  }

  /** The frame or handshake under way was not completed in time. */
  timeout(): void {
    const what = this.state === ConnState.handshake ? 'the IMEI handshake' : 'a packet'
    this.gw.log.info(
      {
        deviceId: this.deviceId || undefined,
        address: this.address,
        pendingBytes: this.pending?.length ?? 0,
      },
      `Teltonika connection closed: ${what} not completed within ${this.gw.timeoutMs / 1000} s`,
    )
    this.close(`${what} not completed in time`)
  }

  close(why: string): void {
    if (this.state === ConnState.closed) return
    this.gw.log.debug(
      { deviceId: this.deviceId || undefined, address: this.address, why },
      'Teltonika connection closed',
    )
    this.teardown()
    this.socket.end()
    // Give the last bytes (a refusal, the acks) a moment to leave, then make sure the socket is gone.
    setTimeout(() => this.socket.destroy(), 1000).unref()
  }

  private teardown(): void {
    if (this.state === ConnState.closed) return
    this.state = ConnState.closed
    this.pending = null
    this.gw.closed(this)
    // Commands the device never got go back for its next connection; one written to it stays delivered,
    // answered or not: sent again it could run twice (a reboot command may end the connection before any response).
    const unsent =
      this.outstanding && !this.outstanding.written ? [this.outstanding, ...this.waiting] : [...this.waiting]
    if (this.outstanding) clearTimeout(this.outstanding.timer)
    this.outstanding = null
    this.waiting.length = 0
    for (const c of unsent) c.events.failed(c.cmd.id, 'the connection closed before the command was sent')
  }
}
