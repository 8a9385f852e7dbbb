/**
 * The Teltonika load generator, a child process of the bench like the MQTT one (generator.ts). Each
 * connection is a tracker: the IMEI handshake, then Codec 8 Extended packets of `recordsPerPacket` records,
 * one at a time, each sent when the previous one's ack (its record count) arrives, as a device does. Every
 * packet is encoded before the clock starts, from the same fleet readings as the MQTT load.
 */
import { type Socket, connect } from 'node:net'
import { performance } from 'node:perf_hooks'
import { avlPacket, imeiFrame } from '../src/simulate/teltonika.js'
import {
  type GeneratorMessage,
  type GeneratorResult,
  type TeltonikaGeneratorConfig,
  fleetReading,
  percentile,
} from './common.js'

interface Conn {
  index: number
  socket: Socket | undefined
  imei: Buffer
  /** The connection's packets back to back: packet k is bytes offsets[k]..offsets[k+1]. */
  packets: Buffer
  offsets: Uint32Array
  /** Records in packet k. */
  records: Uint16Array
  /** Next packet to write; the one before it is in flight until its ack. */
  next: number
  acked: number
  sentAt: number
  latBase: number
  rest: Buffer | null
  accepted: boolean
}

const send = (m: GeneratorMessage) => process.send?.(m)

/** Reading `seq` of device `dev` as a Codec 8 Extended record: the GPS element and four named IO elements. */
function record(dev: number, seq: number) {
  const r = fleetReading(dev, seq)
  return {
    ts: r.ts,
    priority: 0,
    lat: r.lat,
    lon: r.lon,
    alt: 120,
    angle: (dev * 37 + seq * 3) % 360,
    sats: 11,
    speed: Math.round(r.speed),
    eventIo: 0,
    io: [
      [239, 1, 1],
      [89, 1, Math.round(r.fuel)],
      [32, 1, Math.round(r.coolant)],
      [36, 2, r.rpm],
      [16, 4, Math.round(r.odometer * 1000)],
    ] as Array<[number, 1 | 2 | 4 | 8, number]>,
  }
}

function encode(cfg: TeltonikaGeneratorConfig): Conn[] {
  let latBase = 0
  return cfg.imeis.map((imei, index) => {
    const total = cfg.perConnection[index]
    const parts: Buffer[] = []
    const count = Math.ceil(total / cfg.recordsPerPacket)
    const offsets = new Uint32Array(count + 1)
    const records = new Uint16Array(count)
    let off = 0
    for (let k = 0; k < count; k++) {
      const from = k * cfg.recordsPerPacket
      const to = Math.min(total, from + cfg.recordsPerPacket)
      const recs = []
      for (let seq = from; seq < to; seq++) recs.push(record(index, seq))
      const b = avlPacket('8e', recs)
      parts.push(b)
      offsets[k] = off
      records[k] = to - from
      off += b.length
    }
    offsets[count] = off
    const c: Conn = {
      index,
      socket: undefined,
      imei: imeiFrame(imei),
      packets: Buffer.concat(parts, off),
      offsets,
      records,
      next: 0,
      acked: 0,
      sentAt: 0,
      latBase,
      rest: null,
      accepted: false,
    }
    latBase += count
    return c
  })
}

async function run(cfg: TeltonikaGeneratorConfig): Promise<void> {
  const e0 = performance.now()
  const conns = encode(cfg)
  const encodeSeconds = (performance.now() - e0) / 1000
  const expected = cfg.perConnection.reduce((s, n) => s + n, 0)
  const latency = new Float64Array(conns.reduce((s, c) => s + c.records.length, 0))
  let sent = 0
  let acked = 0
  let t0 = 0
  let lastAck = 0
  let startEpoch = 0
  let cpuAtStart = process.cpuUsage()
  let finished = false
  let connected = 0
  let connectResolve: (() => void) | undefined
  let connectReject: ((err: Error) => void) | undefined
  let timer: NodeJS.Timeout | undefined
  let ackedPackets = 0

  const finish = (error?: string) => {
    if (finished) return
    finished = true
    clearInterval(timer)
    const end = acked > 0 ? lastAck : performance.now()
    const seconds = t0 > 0 ? (end - t0) / 1000 : 0
    const cpu = process.cpuUsage(cpuAtStart)
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
      unexpectedAcks: 0,
    }
    send(result)
    for (const c of conns) c.socket?.destroy()
    setTimeout(() => process.exit(0), 100)
  }

  const fail = (why: string) => {
    if (connectReject) connectReject(new Error(why))
    else finish(why)
  }

  const writeNext = (c: Conn, now: number) => {
    const k = c.next++
    c.sentAt = now
    sent += c.records[k]
    c.socket!.write(c.packets.subarray(c.offsets[k], c.offsets[k + 1]))
  }

  const onData = (c: Conn, chunk: Buffer) => {
    let buf = chunk
    if (c.rest !== null) {
      buf = Buffer.concat([c.rest, chunk])
      c.rest = null
    }
    let i = 0
    if (!c.accepted) {
      if (buf[0] !== 0x01) return fail(`connection ${c.index}: IMEI answered ${buf[0]}`)
      c.accepted = true
      i = 1
      if (++connected === conns.length) connectResolve?.()
    }
    const now = performance.now()
    for (; i + 4 <= buf.length; i += 4) {
      const n = buf.readUInt32BE(i)
      const k = c.acked
      if (k >= c.next || n !== c.records[k]) {
        return fail(`connection ${c.index}: ack of ${n} records for packet ${k} of ${c.records[k]}`)
      }
      latency[c.latBase + k] = now - c.sentAt
      c.acked++
      ackedPackets++
      acked += n
      lastAck = now
      if (c.next < c.records.length) writeNext(c, now)
    }
    if (i < buf.length) c.rest = Buffer.from(buf.subarray(i))
    if (acked === expected) finish()
  }

  const c0 = performance.now()
  await new Promise<void>((resolve, reject) => {
    connectResolve = resolve
    connectReject = reject
    for (const c of conns) {
      const s = connect({ host: cfg.host, port: cfg.port, noDelay: true })
      c.socket = s
      s.on('connect', () => s.write(c.imei))
      s.on('data', (chunk: Buffer) => onData(c, chunk))
      s.on('error', (err) => fail(`connection ${c.index}: ${err.message}`))
      s.on('close', () => {
        if (!finished && c.acked < c.records.length) fail(`connection ${c.index} closed by the server`)
      })
    }
  })
  connectResolve = undefined
  connectReject = undefined
  const connectSeconds = (performance.now() - c0) / 1000

  cpuAtStart = process.cpuUsage()
  startEpoch = Date.now()
  t0 = performance.now()
  lastAck = t0
  send({ type: 'started', startEpoch, encodeSeconds, connectSeconds })
  for (const c of conns) if (c.records.length > 0) writeNext(c, t0)

  timer = setInterval(() => {
    send({ type: 'progress', acked })
    if (performance.now() - lastAck > cfg.stallMs) {
      finish(
        `no ack for ${Math.round(cfg.stallMs / 1000)} s (acked ${acked} of ${expected} in ${ackedPackets} packets)`,
      )
    }
  }, cfg.progressMs)
  if (expected === 0) finish()
}

process.once('message', (m: TeltonikaGeneratorConfig) => {
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
process.on('disconnect', () => process.exit(1))
