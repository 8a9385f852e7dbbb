/**
 * The load generator, a child process of the bench so it never shares an event loop with the system under
 * test. Every packet is encoded with mqtt-packet before the clock starts; then each connection keeps
 * `inflight` QoS 1 publishes outstanding, writing as many pre-encoded publishes (one contiguous slice of one
 * buffer, one write) as the PUBACKs that just arrived, which are parsed by hand.
 */
import { type Socket, connect } from 'node:net'
import { performance } from 'node:perf_hooks'
import mqttPacket from 'mqtt-packet'
import {
  type GeneratorConfig,
  type GeneratorMessage,
  type GeneratorResult,
  fleetPayload,
  percentile,
} from './common.js'

/** A connection's publishes, encoded back to back in one buffer: publish k is bytes offsets[k]..offsets[k+1]. */
interface Conn {
  index: number
  socket: Socket | undefined
  connect: Buffer
  publishes: Buffer
  offsets: Uint32Array
  total: number
  /** next publish to write */
  next: number
  acked: number
  /** send time (performance.now) of each publish */
  sentAt: Float64Array
  /** packet id -> publish number, -1 when none is in flight */
  pidSeq: Int32Array
  /** where this connection's latencies go in the shared array */
  latBase: number
  rest: Buffer | null
  connacked: boolean
}

const send = (m: GeneratorMessage) => process.send?.(m)

function packetId(seq: number): number {
  return (seq % 65535) + 1
}

function encode(cfg: GeneratorConfig): Conn[] {
  const conns: Conn[] = []
  let latBase = 0
  cfg.connections.forEach((c, index) => {
    const total = cfg.perConnection[index]
    const parts: Buffer[] = []
    const offsets = new Uint32Array(total + 1)
    let off = 0
    for (let seq = 0; seq < total; seq++) {
      const b = mqttPacket.generate({
        cmd: 'publish',
        topic: c.topic,
        payload: fleetPayload(c.device, seq),
        qos: 1,
        messageId: packetId(seq),
        retain: false,
        dup: false,
      })
      parts.push(b)
      offsets[seq] = off
      off += b.length
    }
    offsets[total] = off
    conns.push({
      index,
      socket: undefined,
      connect: mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clean: true,
        clientId: c.clientId,
        keepalive: 0,
        ...(c.username !== undefined ? { username: c.username } : {}),
        ...(c.password !== undefined ? { password: Buffer.from(c.password) } : {}),
      }),
      publishes: Buffer.concat(parts, off),
      offsets,
      total,
      next: 0,
      acked: 0,
      sentAt: new Float64Array(total),
      pidSeq: new Int32Array(65536).fill(-1),
      latBase,
      rest: null,
      connacked: false,
    })
    latBase += total
  })
  return conns
}

async function run(cfg: GeneratorConfig): Promise<void> {
  const cpu0 = process.cpuUsage()
  const e0 = performance.now()
  const conns = encode(cfg)
  const encodeSeconds = (performance.now() - e0) / 1000
  const expected = conns.reduce((s, c) => s + c.total, 0)
  const latency = new Float64Array(expected)

  let sent = 0
  let acked = 0
  let unexpectedAcks = 0
  let t0 = 0
  let lastAck = 0
  let startEpoch = 0
  let cpuAtStart = cpu0
  let finished = false
  let connected = 0
  let connectResolve: (() => void) | undefined
  let connectReject: ((err: Error) => void) | undefined
  let timer: NodeJS.Timeout | undefined

  const finish = (error?: string) => {
    if (finished) return
    finished = true
    clearInterval(timer)
    const end = acked > 0 ? lastAck : performance.now()
    const seconds = t0 > 0 ? (end - t0) / 1000 : 0
    const cpu = process.cpuUsage(cpuAtStart)
    // Only the acknowledged publishes have a latency; sort those.
    const lat: number[] = []
    for (const c of conns) for (let k = 0; k < c.acked; k++) lat.push(latency[c.latBase + k])
    const sorted = Float64Array.from(lat).sort()
    const result: GeneratorResult = {
      type: 'done',
      ok: !error && acked === expected,
      ...(error ? { error } : acked !== expected ? { error: `only ${acked} of ${expected} acked` } : {}),
      sent,
      acked,
      expected,
      startEpoch,
      seconds,
      acksPerSec: seconds > 0 ? acked / seconds : 0,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted.length ? sorted[sorted.length - 1] : Number.NaN,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      encodeSeconds,
      connectSeconds,
      unexpectedAcks,
    }
    send(result)
    for (const c of conns) c.socket?.destroy()
    // Let the IPC message leave before exiting.
    setTimeout(() => process.exit(0), 100)
  }

  const fail = (why: string) => {
    if (connectReject) connectReject(new Error(why))
    else finish(why)
  }

  const writeNext = (c: Conn, k: number, now: number) => {
    const from = c.next
    const to = Math.min(c.total, from + k)
    if (to <= from) return
    for (let s = from; s < to; s++) {
      c.sentAt[s] = now
      c.pidSeq[packetId(s)] = s
    }
    c.next = to
    sent += to - from
    c.socket!.write(c.publishes.subarray(c.offsets[from], c.offsets[to]))
  }

  /** Anything but a PUBACK: only CONNACK is expected. */
  const onOther = (c: Conn, type: number, body: Buffer) => {
    if (type === 2) {
      const rc = body[1]
      if (rc !== 0) return fail(`connection ${c.index}: CONNACK refused with code ${rc}`)
      if (!c.connacked) {
        c.connacked = true
        connected++
        if (connected === conns.length) connectResolve?.()
      }
      return
    }
    if (type === 4 && body.length >= 2) return onAck(c, (body[0] << 8) | body[1], performance.now())
    if (type === 13) return // PINGRESP
    if (type === 14) return fail(`connection ${c.index}: the server sent DISCONNECT`)
    fail(`connection ${c.index}: unexpected packet type ${type}`)
  }

  const onAck = (c: Conn, pid: number, now: number): boolean => {
    const seq = c.pidSeq[pid]
    if (seq < 0) {
      unexpectedAcks++
      return false
    }
    c.pidSeq[pid] = -1
    latency[c.latBase + c.acked] = now - c.sentAt[seq]
    c.acked++
    acked++
    return true
  }

  const onData = (c: Conn, chunk: Buffer) => {
    let buf = chunk
    if (c.rest !== null) {
      buf = Buffer.concat([c.rest, chunk])
      c.rest = null
    }
    const n = buf.length
    const now = performance.now()
    let i = 0
    let k = 0
    while (i < n) {
      // The fast path: a v3.1.1 PUBACK is exactly 0x40 0x02 idH idL.
      if (buf[i] === 0x40 && i + 1 < n && buf[i + 1] === 0x02) {
        if (i + 4 > n) break
        if (onAck(c, (buf[i + 2] << 8) | buf[i + 3], now)) k++
        i += 4
        continue
      }
      // Any other packet: fixed header, variable-length remaining length, body.
      let len = 0
      let mult = 1
      let j = i + 1
      let complete = false
      while (j < n && j < i + 5) {
        const b = buf[j++]
        len += (b & 0x7f) * mult
        mult *= 128
        if ((b & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete || j + len > n) break
      const before = c.acked
      onOther(c, buf[i] >> 4, buf.subarray(j, j + len))
      k += c.acked - before
      i = j + len
      if (finished) return
    }
    if (i < n) c.rest = Buffer.from(buf.subarray(i))
    if (k > 0) {
      lastAck = now
      if (c.next < c.total) writeNext(c, k, now)
      if (acked === expected) finish()
    }
  }

  // ---- connect every connection and wait for all CONNACKs, before the clock starts
  const c0 = performance.now()
  await new Promise<void>((resolve, reject) => {
    connectResolve = resolve
    connectReject = reject
    for (const c of conns) {
      const s = connect({ host: cfg.host, port: cfg.port, noDelay: true })
      c.socket = s
      s.on('connect', () => s.write(c.connect))
      s.on('data', (chunk: Buffer) => onData(c, chunk))
      s.on('error', (err) => fail(`connection ${c.index}: ${err.message}`))
      s.on('close', () => {
        if (!finished && c.acked < c.total) fail(`connection ${c.index} closed by the server`)
      })
    }
  })
  connectResolve = undefined
  connectReject = undefined
  const connectSeconds = (performance.now() - c0) / 1000

  // ---- the clock starts at the first publish
  cpuAtStart = process.cpuUsage()
  startEpoch = Date.now()
  t0 = performance.now()
  lastAck = t0
  send({ type: 'started', startEpoch, encodeSeconds, connectSeconds })
  for (const c of conns) writeNext(c, cfg.inflight, t0)

  timer = setInterval(() => {
    send({ type: 'progress', acked })
    if (performance.now() - lastAck > cfg.stallMs) {
      finish(`no PUBACK for ${Math.round(cfg.stallMs / 1000)} s (acked ${acked} of ${expected})`)
    }
  }, cfg.progressMs)
  if (expected === 0) finish()
}

process.once('message', (m: GeneratorConfig) => {
  run(m).catch((err: Error) => {
    send({
      type: 'done',
      ok: false,
      error: err.message,
      sent: 0,
      acked: 0,
      expected: 0,
      startEpoch: 0,
      seconds: 0,
      acksPerSec: 0,
      p50Ms: Number.NaN,
      p99Ms: Number.NaN,
      maxMs: Number.NaN,
      cpuSeconds: 0,
      encodeSeconds: 0,
      connectSeconds: 0,
      unexpectedAcks: 0,
    })
    setTimeout(() => process.exit(1), 100)
  })
})
// The orchestrator gone: nothing left to measure for.
process.on('disconnect', () => process.exit(1))
