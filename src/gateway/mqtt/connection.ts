import type { Duplex } from 'node:stream'
import mqtt, { type IConnectPacket } from 'mqtt-packet'
import type { ClientCertificate } from '../../lib/tls.js'
import type { AckSink, Transport } from '../../queue/types.js'
import { TOKEN_QOS2, ackToken, ackTokens } from './acks.js'
import { ConnState, PacketType, ReasonCode } from './codes.js'
import type { Downlink } from './downlink.js'
import { decodePublish } from './fast-publish.js'
import { FrameStatus, decodeVbi, vbi } from './framing.js'
import type { MqttGateway } from './gateway.js'
import { refuseConnect } from './handlers/connect.js'
import { deliverWill, handlePublish, refuseTooLarge } from './handlers/publish.js'
import type { OperatorLink } from './operators.js'
import type { ResendWindow } from './resends.js'
import { checkConnect } from './validate-connect.js'
import { checkPacket } from './validate.js'

/** A v3.1.1 client cannot be told a Receive Maximum; past this many unacked publishes we stop reading. */
export const V3_INFLIGHT_PAUSE = 1000

/**
 * One MQTT client: its bytes in, flow control, durable acks out, and the close. Small on purpose (10,000s
 * are held at once): most fields are numbers, and collections are created only when used. The packet
 * handlers (handlers/) read and write its state.
 */
export class Connection implements AckSink {
  state: ConnState = ConnState.new
  /** Protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5; 0 until the CONNECT is read. */
  version = 0
  /** The Keep Alive in force (v5: ours if we sent Server Keep Alive); 0: the client sends no pings. */
  keepalive = 0
  /** Silence after which the connection is cut (the sweep's rule: handlers/connect.ts sets it). */
  maxSilenceMs = 0
  lastActivity: number
  deviceId = ''
  /**
   * The token hash this connection authenticated with (the cache's own string, not a copy): while the device's
   * credential still holds it, the connection may stay; a rotation or a delete cuts it (gateway.ts).
   */
  tokenHash = ''
  /** The client certificate presented over MQTTS with IOTCORE_TLS_CA (lib/tls.ts), or null. */
  certificate: ClientCertificate | null = null
  /** Authenticated by that certificate, with no token: a token rotation does not cut it (gateway.ts). */
  byCertificate = false
  clientId: string | undefined
  telemetryTopic = ''
  telemetryTopicBytes: Buffer | null = null
  /** Bytes of an incomplete packet (or, while the CONNECT is authenticated, all that came after it). */
  private pending: Buffer[] | null = null
  private pendingBytes = 0
  /** Size of the incomplete packet in `pending`, or 0 while its fixed header is incomplete. */
  private pendingNeed = 0
  /** QoS 1 and 2 publishes taken and not yet acknowledged. */
  inflight = 0
  private paused = false
  /** Tokens of the acks of the commit being reported (between cork and uncork). */
  private acks: number[] | null = null
  private ackedReadings = 0
  /** QoS 2 packet ids answered with PUBREC and not yet released by PUBREL. */
  qos2: Set<number> | null = null
  /** Topic filter -> granted QoS. */
  subs: Map<string, number> | null = null
  /** Seconds the session outlives the connection; 0: it ends with it. */
  sessionExpiry = 0
  /** Receive stamps of the latest QoS 1/2 publishes, for resends (resends.ts); made on the first one. */
  resends: ResendWindow | null = null
  will: IConnectPacket['will'] | null = null
  /** Commands to the device on this connection (downlink.ts); made when it subscribes to them. */
  downlink: Downlink | null = null
  /** An operator's connection (username `$admin`): the alert events it is sent (operators.ts); else null. */
  operator: OperatorLink | null = null

  constructor(
    readonly gw: MqttGateway,
    private readonly wire: Duplex,
    readonly transport: Transport,
  ) {
    // The real time, not the sweep clock (up to a second behind): the connect timeout counts from here.
    this.lastActivity = Date.now()
    wire.on('data', (chunk: Buffer) => this.onData(chunk))
    wire.on('error', () => this.teardown())
    wire.on('close', () => this.teardown())
    wire.on('end', () => this.teardown())
  }

  // ---- input

  private onData(chunk: Buffer): void {
    if (this.state === ConnState.closed) return
    // While the CONNECT is authenticated nothing after it is read: keep it for later [MQTT-3.1.4-6].
    if (this.state === ConnState.auth) return this.keep(chunk, 0)
    // Before CONNACK, lastActivity stays the accept time: the connect timeout counts from there, so a
    // CONNECT trickled a byte at a time cannot hold the socket forever.
    if (this.state === ConnState.connected) this.lastActivity = this.gw.now
    if (this.pending !== null) {
      this.pending.push(chunk)
      this.pendingBytes += chunk.length
      if (this.pendingNeed > 0 && this.pendingBytes < this.pendingNeed) return
      chunk = this.takePending()
    }
    try {
      this.consume(chunk)
    } catch (err) {
      // A handler that throws must not take the listener down with it: close this connection only.
      this.fail(err)
    }
  }

  private consume(data: Buffer): void {
    // Before the CONNECT is accepted, only it is read; whatever follows waits for the authentication.
    const connected = this.state === ConnState.connected
    const scan = this.gw.frames(data, connected ? Number.MAX_SAFE_INTEGER : 1)
    const { end, need, status, size, type } = scan
    // mqtt-packet is lenient: whole packets are checked on their bytes first, and the first malformed one is
    // answered with a disconnect (v5: its reason code) after the packets before it [MQTT-4.13.1-1] (v3.1.1:
    // MQTT-4.8.0-1).
    if (connected) {
      if (end > 0 && !this.packets(data, end)) return
    } else if (end > 0) this.connect(data, end)
    if (status === FrameStatus.malformed)
      return this.protocolError(ReasonCode.malformedPacket, 'malformed remaining length')
    if (status === FrameStatus.tooLarge) return refuseTooLarge(this, size, type)
    if (this.state === ConnState.closed || end === data.length) return
    // Keep the rest as a copy: a slice would pin the socket's whole read buffer for an idle connection.
    this.keep(Buffer.from(data.subarray(end)), need)
    // While the CONNECT is being authenticated, what follows it waits. A CONNECT that is itself still
    // incomplete (state new) must keep reading, or its rest never arrives.
    if (this.state === ConnState.auth) this.pause()
  }

  private keep(bytes: Buffer, need: number): void {
    ;(this.pending ??= []).push(bytes)
    this.pendingBytes += bytes.length
    this.pendingNeed = need
  }

  private takePending(): Buffer {
    const data =
      this.pending!.length === 1 ? this.pending![0] : Buffer.concat(this.pending!, this.pendingBytes)
    this.pending = null
    this.pendingBytes = 0
    this.pendingNeed = 0
    return data
  }

  /** The first packet, whole in `data[0, end)`: it must be a CONNECT [MQTT-3.1.0-1], checked on its bytes. */
  private connect(data: Buffer, end: number): void {
    if (data[0] >> 4 !== PacketType.connect) return this.close('the first packet was not CONNECT')
    const fault = checkConnect(data, 0, end)
    if (fault) {
      this.version = fault.version
      this.gw.log.info({ transport: this.transport, why: fault.why }, 'CONNECT refused on its bytes')
      return refuseConnect(this, fault.rc, fault.why)
    }
    this.gw.parse(this, end === data.length ? data : data.subarray(0, end))
  }

  /**
   * Handles the whole packets in `data[0, end)`; false if the connection closed on the way. Each packet is
   * checked on its bytes first. The common PUBLISH is decoded straight from the bytes (fast-publish.ts);
   * runs of other packets go through the shared mqtt-packet parser, in order.
   */
  private packets(data: Buffer, end: number): boolean {
    let pos = 0
    let run = 0
    while (pos < end) {
      const body = decodeVbi(data, pos + 1, end)
      const next = body + vbi.value
      const bad = checkPacket(data, pos, body, next, this.version, this.telemetryTopicBytes)
      if (bad) {
        if (pos > run) this.gw.parse(this, data.subarray(run, pos))
        if (this.state !== ConnState.closed) this.protocolError(bad.rc, bad.why)
        return false
      }
      const publish =
        data[pos] >> 4 === PacketType.publish ? decodePublish(this, data, pos, body, next) : undefined
      if (publish !== undefined) {
        if (pos > run) {
          this.gw.parse(this, data.subarray(run, pos))
          if (this.state === ConnState.closed) return false
        }
        handlePublish(this, publish)
        if (this.state === ConnState.closed) return false
        run = next
      }
      pos = next
    }
    if (end > run) this.gw.parse(this, data.subarray(run, end))
    return this.state !== ConnState.closed
  }

  /** The CONNECT was accepted: read on, starting with what came after it. */
  resumeAfterConnect(): void {
    this.resume()
    if (this.pending !== null) this.consume(this.takePending())
  }

  onParseError(err: Error): void {
    this.protocolError(ReasonCode.malformedPacket, err.message)
  }

  // ---- durable acks (AckSink): the queue reports a commit as cork, ack per message, uncork

  cork(): void {
    this.acks ??= []
  }

  ack(token: number, count: number, err: Error | undefined): void {
    if (this.state === ConnState.closed) return
    if (err) return this.disconnect(ReasonCode.serverBusy, err.message)
    this.inflight--
    this.ackedReadings += count
    // [MQTT-4.3.3-10] (v3.1.1: MQTT-4.3.3-2) until its PUBREL, a resent QoS 2 PUBLISH is answered, not taken.
    if (token & TOKEN_QOS2) (this.qos2 ??= new Set()).add(token & 0xffff)
    if (this.acks !== null) this.acks.push(token)
    else this.write(ackToken(token))
  }

  uncork(): void {
    const acks = this.acks
    this.acks = null
    if (this.ackedReadings > 0) {
      this.gw.metrics.acked.inc({ transport: this.transport }, this.ackedReadings)
      this.ackedReadings = 0
    }
    if (acks === null || acks.length === 0 || this.state === ConnState.closed) return
    this.write(ackTokens(acks))
    // Connected, `pending` can only hold the start of a packet whose rest is still unread: resume even so,
    // or that packet (and the connection) would wait forever.
    if (this.paused && this.inflight < V3_INFLIGHT_PAUSE / 2) this.resume()
  }

  // ---- flow control, sessions and closing

  pause(): void {
    if (!this.paused) {
      this.paused = true
      this.wire.pause()
    }
  }

  private resume(): void {
    if (this.paused) {
      this.paused = false
      this.wire.resume()
    }
  }

  /** Bytes written and not yet taken by the client. */
  get unsent(): number {
    return this.wire.writableLength
  }

  write(buf: Buffer): void {
    if (this.state !== ConnState.closed && this.wire.writable) this.wire.write(buf)
  }

  /** Stores the subscriptions of a session that outlives the connection (sessions.ts). */
  saveSession(): void {
    if (this.sessionExpiry > 0)
      this.gw.sessions?.save(this.clientId!, this.deviceId, this.subs ?? new Map(), this.sessionExpiry)
  }

  timeout(why: string): void {
    this.gw.log.info(
      { deviceId: this.deviceId || undefined, version: this.version || undefined, why },
      'MQTT connection timed out',
    )
    this.disconnect(ReasonCode.keepAliveTimeout, why)
  }

  /**
   * The credential this connection authenticated with was revoked (a deleted or retired device, a rotated
   * token): v5 gets DISCONNECT 0x87 Not authorized with the reason (§3.14.2.1), v3.1.1 the close. Nothing more
   * is taken from it, its will included: it was set under the revoked credential.
   */
  revoke(why: string, deviceGone: boolean): void {
    this.gw.log.info({ deviceId: this.deviceId, why }, 'MQTT connection cut: its credential was revoked')
    this.will = null
    // A rotated device may reconnect to its session with the new token and resend; a gone one cannot.
    if (deviceGone) this.resends = null
    this.disconnect(ReasonCode.notAuthorized, why)
  }

  /** A fault of ours while handling this connection's input: close it, keep the listener. */
  fail(err: unknown): void {
    this.gw.log.error({ err, deviceId: this.deviceId || undefined }, 'MQTT packet handler failed; closing')
    this.disconnect(ReasonCode.unspecifiedError, 'internal error')
  }

  /** A protocol violation: v5 gets a DISCONNECT with the reason before the close [MQTT-4.13.1-1]. */
  protocolError(rc: number, why: string): void {
    this.gw.log.info(
      { deviceId: this.deviceId || undefined, reasonCode: rc, why },
      'MQTT protocol error; closing',
    )
    this.disconnect(rc, why)
  }

  /** Server-initiated close; v5 clients past CONNACK are told why [MQTT-3.14.0-1]. */
  disconnect(rc: number, why: string): void {
    if (this.state === ConnState.closed) return
    if (this.version === 5 && this.state === ConnState.connected) {
      this.write(
        mqtt.generate(
          { cmd: 'disconnect', reasonCode: rc, properties: { reasonString: why.slice(0, 200) } },
          { protocolVersion: 5 },
        ),
      )
    }
    this.close(why)
  }

  close(why: string, graceful = false): void {
    if (this.state === ConnState.closed) return
    if (!graceful && this.deviceId)
      this.gw.log.debug({ deviceId: this.deviceId, why }, 'MQTT connection closed')
    this.teardown()
    this.wire.end()
    // Give the last packet a moment to leave, then make sure the socket is gone.
    setTimeout(() => this.wire.destroy(), 1000).unref()
  }

  private teardown(): void {
    if (this.state === ConnState.closed) return
    const wasConnected = this.state === ConnState.connected
    this.state = ConnState.closed
    this.pending = null
    this.gw.closed(this)
    if (wasConnected && this.sessionExpiry > 0) {
      this.gw.sessions?.touch(this.clientId!, this.sessionExpiry)
      // What the client may resend on reconnecting to this session (resends.ts).
      if (this.resends !== null) this.gw.park(this.clientId!, this.resends, this.sessionExpiry)
    }
    this.resends = null
    // [MQTT-3.1.2-8] the will is published when the connection closes without a normal DISCONNECT.
    if (wasConnected && this.will) deliverWill(this)
  }
}
