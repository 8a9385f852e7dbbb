/**
 * Replays the Eclipse Mosquitto broker test vectors (../shared/mqtt-vectors, read in place, see its README)
 * against the MQTT gateway over raw TCP, with a registered device's credentials in the default CONNECT.
 *
 * The gateway is not a broker (no routing, no retain) and has ACLs, so Mosquitto's byte-exact answers are not
 * asserted; they are counted as information. What is asserted, per vector:
 *  - `expect_disconnect` (default true): the gateway closes the connection within DISCONNECT_MS (a v5
 *    DISCONNECT or a CONNACK refusal before the close is fine);
 *  - `expect_disconnect: false`: the connection still answers a PINGREQ with a PINGRESP;
 * and, after every file, that a fresh authenticated client can still connect and get a QoS 1 PUBACK.
 *
 * Where the gateway's contract differs from a broker's, the other outcome is accepted only for that named
 * reason (see `excuse`): the vector's own CONNECT carries no device credentials (CONNACK refusal); a PUBLISH
 * outside the device's topics (v3.1.1 has no negative ack: close; v5: DISCONNECT with an ACL/feature reason);
 * a disconnect Mosquitto gives for the client's reaction to a PUBLISH routed to it, which a gateway never
 * sends (the connection must then still answer a PINGREQ).
 */
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Platform, startPlatform } from '../../helpers/index.js'
import { type AnyPacket, type Device, RawMqtt, splitPackets } from '../../helpers/mqtt-raw.js'

/**
 * dist/test/gateway/mqtt/vectors.test.js -> the repository root; the vectors live beside it, never copied in.
 * IOTCORE_TEST_MQTT_VECTORS names another place (a git worktree has no ../shared beside it).
 */
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url))
const VECTORS_DIR = process.env.IOTCORE_TEST_MQTT_VECTORS ?? join(REPO_ROOT, '..', 'shared', 'mqtt-vectors')

/** Sockets replaying vectors at once. */
const CONCURRENCY = 40
/** How long a `recv` step waits for the gateway's next packet (information only: it is not asserted). */
const RECV_MS = 1000
/** Bound for the gateway to close a connection it must close, or to answer a PINGREQ / CONNECT / PUBLISH. */
const DISCONNECT_MS = 5000
const ANSWER_MS = 5000

interface Step {
  type: 'send' | 'recv' | 'publish'
  payload: string
  topic?: string
  qos?: 0 | 1 | 2
  comment?: string
}
interface VectorTest {
  name: string
  ver?: 3 | 4 | 5
  connect?: boolean
  expect_disconnect?: boolean
  msgs: Step[]
}
interface VectorGroup {
  group: string
  tests: VectorTest[]
}
interface Vector {
  /** "group name", as Mosquitto's runner names it. */
  name: string
  ver: 3 | 4 | 5
  connect: boolean
  expectDisconnect: boolean
  msgs: Step[]
}

type Outcome = 'closed' | 'alive' | 'hung'
interface Result {
  vector: Vector
  outcome: Outcome
  /** Why an outcome other than the expected one is the gateway's contract, not a fault. */
  excused?: string
  /** Set when the vector failed: what was wrong. */
  failure?: string
  recvSteps: number
  recvMatched: number
  /** `recv` steps answered with a packet of the same type and flags, if not the same bytes. */
  recvSameType: number
}

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

function loadVectors(file: string): Vector[] {
  const groups = JSON.parse(readFileSync(join(VECTORS_DIR, file), 'utf8')) as VectorGroup[]
  const out: Vector[] = []
  for (const g of groups) {
    for (const t of g.tests) {
      // The defaults of Mosquitto's runner (test/broker/msg_sequence_test.py).
      out.push({
        name: `${g.group} ${t.name}`,
        ver: t.ver ?? 4,
        connect: t.connect ?? true,
        expectDisconnect: t.expect_disconnect ?? true,
        msgs: t.msgs,
      })
    }
  }
  return out
}

/** The first byte after the fixed header: CONNACK's return code sits one further, DISCONNECT's reason here. */
function bodyStart(pk: Buffer): number {
  let i = 1
  while (pk[i] & 128) i++
  return i + 1
}

/** Opens a connection with the device's credentials; undefined if it was not accepted. */
async function openAuthenticated(port: number, ver: 3 | 4 | 5, clientId: string, dev: Device) {
  const w = await RawMqtt.open(port, ver)
  w.send(w.connectPacket(dev, { clientId }))
  const ack = await w.nextRaw(ANSWER_MS)
  if (ack === undefined || ack[0] !== 0x20 || ack[bodyStart(ack) + 1] !== 0) {
    w.destroy()
    return { w: undefined, why: ack ? `CONNACK ${ack.toString('hex')}` : 'no CONNACK' }
  }
  return { w, why: '' }
}

let probes = 0
/**
 * A fresh authenticated client publishes one reading at `qos` to its telemetry topic and must get the
 * acknowledgement (PUBACK, or PUBREC then PUBCOMP). Returns what went wrong, or undefined.
 */
async function probe(port: number, dev: Device, ver: 4 | 5, qos: 0 | 1 | 2): Promise<string | undefined> {
  const { w, why } = await openAuthenticated(port, ver, `probe-${++probes}`, dev)
  if (!w) return `probe CONNECT refused: ${why}`
  try {
    const pid = 1 + (probes % 65000)
    const payload = JSON.stringify({ ts: Date.now(), msgId: `probe-${probes}`, probe: probes })
    const topic = `devices/${dev.id}/telemetry`
    w.send({ cmd: 'publish', topic, payload, qos, messageId: pid, retain: false, dup: false } as AnyPacket)
    if (qos === 0) {
      w.write(Buffer.from([0xc0, 0x00]))
      return (await w.nextRaw(ANSWER_MS))?.[0] === 0xd0 ? undefined : 'probe: no PINGRESP after QoS 0'
    }
    const ack = await w.nextRaw(ANSWER_MS)
    const want = qos === 1 ? 0x40 : 0x50
    if (ack?.[0] !== want || ack.readUInt16BE(bodyStart(ack)) !== pid)
      return `probe: expected ${qos === 1 ? 'PUBACK' : 'PUBREC'}, got ${ack?.toString('hex') ?? 'nothing'}`
    if (ack.length > 4 && ack[4] >= 0x80) return `probe: refused with reason 0x${ack[4].toString(16)}`
    if (qos === 2) {
      w.write(Buffer.from([0x62, 0x02, pid >> 8, pid & 0xff]))
      const comp = await w.nextRaw(ANSWER_MS)
      if (comp?.[0] !== 0x70) return `probe: expected PUBCOMP, got ${comp?.toString('hex') ?? 'nothing'}`
    }
    w.write(Buffer.from([0xe0, 0x00]))
    return undefined
  } finally {
    w.destroy()
  }
}

/** Sends a PINGREQ; true once its PINGRESP came (counted, so one the vector asked for earlier does not do). */
async function ping(w: RawMqtt): Promise<boolean> {
  const pongs = () => w.received().filter((pk) => pk[0] === 0xd0 && pk.length === 2).length
  const before = pongs()
  w.write(Buffer.from([0xc0, 0x00]))
  await w.until(() => pongs() > before, ANSWER_MS)
  return pongs() > before
}

/** Printable ASCII only, as a client id. */
const clientIdOf = (v: Vector, n: number) => `${v.name.replace(/[^\x21-\x7e]+/g, ' ').trim()} #${n}`

/** Why the gateway may end a vector differently from Mosquitto; undefined if it may not. */
function excuse(v: Vector, outcome: Outcome, w: RawMqtt, sent: Buffer[]): string | undefined {
  const got = w.received()
  if (!v.expectDisconnect && outcome === 'closed') {
    // The vector's own CONNECT has no device credentials: refused with a CONNACK code, then closed.
    if (got.some((pk) => pk[0] === 0x20 && pk.length >= 4 && pk[bodyStart(pk) + 1] !== 0))
      return 'own CONNECT refused (no device credentials)'
    // The gateway holds MQTT 3.1 CONNECTs to 3.1.1's reserved bits, and such a CONNECT has no credentials either.
    if (!v.connect && sent[0]?.[0] >> 4 === 1 && !got.some((pk) => pk[0] === 0x20))
      return 'own CONNECT closed as malformed (no device credentials)'
    if (v.ver === 5) {
      // v5 says why: an ACL refusal, or a feature the gateway announced it lacks.
      const d = got.find((pk) => pk[0] === 0xe0)
      const rc = d && d.length > 2 ? d[bodyStart(d)] : undefined
      if (rc !== undefined && GATEWAY_REFUSALS.has(rc)) return `DISCONNECT 0x${rc.toString(16)}`
      return undefined
    }
    // v3.1.1 cannot refuse one PUBLISH: a publish outside the device's topics closes the connection.
    if (sent.some((pk) => pk[0] >> 4 === 3)) return 'PUBLISH outside the device topics (v3.1.1: close)'
    return undefined
  }
  if (v.expectDisconnect && outcome === 'alive' && v.msgs.some((m) => m.type === 'publish')) {
    // Mosquitto routes the helper's PUBLISH to this client and then disconnects it for a wrong ack; the
    // gateway routes nothing, so those acks are unsolicited and the connection rightly stays.
    return 'needs broker routing'
  }
  return undefined
}

/** v5 reason codes the gateway closes with where Mosquitto would keep going: its ACLs and announced limits. */
const GATEWAY_REFUSALS = new Set([
  0x87, // Not authorized: a PUBLISH outside the device's topics
  0x94, // Topic Alias invalid: Topic Alias Maximum is 0
  0x9a, // Retain not supported: Retain Available is 0
])

async function runVector(port: number, dev: Device, probeDev: Device, v: Vector, n: number): Promise<Result> {
  const recvSteps = v.msgs.filter((m) => m.type === 'recv').length
  const r: Result = { vector: v, outcome: 'hung', recvSteps, recvMatched: 0, recvSameType: 0 }
  let w: RawMqtt | undefined
  try {
    if (v.connect) {
      const opened = await openAuthenticated(port, v.ver, clientIdOf(v, n), dev)
      if (!opened.w) {
        r.failure = `default CONNECT refused: ${opened.why}`
        return r
      }
      w = opened.w
    } else {
      w = await RawMqtt.open(port, v.ver)
    }
    const sent: Buffer[] = []
    for (const m of v.msgs) {
      if (m.type === 'send') {
        const bytes = hex(m.payload)
        sent.push(bytes)
        w.write(bytes)
      } else if (m.type === 'recv') {
        const pk = await w.nextRaw(RECV_MS)
        const want = hex(m.payload)
        if (pk?.equals(want)) r.recvMatched++
        if (pk?.[0] === want[0]) r.recvSameType++
      } else if (m.type === 'publish') {
        // Mosquitto's helper client publishes; here another connection publishes the device's telemetry.
        const err = await probe(port, probeDev, 4, m.qos ?? 0)
        if (err) {
          r.failure = `helper publish: ${err}`
          return r
        }
      }
    }
    const sentPackets = splitPackets(Buffer.concat(sent))
    if (v.expectDisconnect) {
      await w.until(() => false, DISCONNECT_MS)
      // Still open past the bound: does it at least answer?
      r.outcome = w.closed ? 'closed' : (await ping(w)) ? 'alive' : w.closed ? 'closed' : 'hung'
    } else {
      r.outcome = (await ping(w)) ? 'alive' : w.closed ? 'closed' : 'hung'
    }
    const wanted: Outcome = v.expectDisconnect ? 'closed' : 'alive'
    if (r.outcome !== wanted) {
      r.excused = excuse(v, r.outcome, w, sentPackets)
      if (!r.excused) {
        const tail = w
          .received()
          .slice(-3)
          .map((pk) => pk.toString('hex').slice(0, 24))
          .join(' ')
        r.failure = `expected ${v.expectDisconnect ? 'a disconnect' : 'a PINGRESP'}, got ${r.outcome}${tail ? ` (last packets: ${tail})` : ''}`
      }
    }
    return r
  } catch (err) {
    r.failure = `error: ${(err as Error).message}`
    return r
  } finally {
    w?.destroy()
  }
}

async function pool<T, R>(items: T[], size: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(size, items.length) }, worker))
  return out
}

const files = readdirSync(VECTORS_DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()

describe('Mosquitto broker test vectors against the MQTT gateway', () => {
  let p: Platform
  let dev: Device
  let probeDev: Device
  let seq = 0
  const totals = { vectors: 0, met: 0, excused: 0, failed: 0, recvSteps: 0, recvMatched: 0, recvSameType: 0 }
  const excuses = new Map<string, number>()
  // The gateway runs in this process: an exception escaping a socket handler would crash a real listener,
  // but node:test only reports it. Collect them, and fail the file they happened in.
  const escaped: string[] = []
  const onEscape = (err: unknown) => escaped.push(String((err as Error)?.stack ?? err))

  before(async () => {
    process.on('uncaughtException', onEscape)
    process.on('unhandledRejection', onEscape)
    p = await startPlatform()
    dev = await p.createDevice('vectors')
    probeDev = await p.createDevice('vectors-probe')
  })
  after(async () => {
    await p.stop()
    process.off('uncaughtException', onEscape)
    process.off('unhandledRejection', onEscape)
  })

  test('the vectors are there', () => {
    assert.ok(files.length > 0, `no JSON vector files in ${VECTORS_DIR}`)
  })

  for (const file of files) {
    test(file, async () => {
      const vectors = loadVectors(file)
      assert.ok(vectors.length > 0, `${file} holds no tests`)
      const results = await pool(vectors, CONCURRENCY, (v) => runVector(p.mqttPort, dev, probeDev, v, ++seq))
      const failed = results.filter((r) => r.failure !== undefined)
      const met = results.filter((r) => !r.failure && !r.excused).length
      const excused = results.filter((r) => !r.failure && r.excused)
      const recvSteps = results.reduce((s, r) => s + r.recvSteps, 0)
      const recvMatched = results.reduce((s, r) => s + r.recvMatched, 0)
      const recvSameType = results.reduce((s, r) => s + r.recvSameType, 0)
      for (const r of excused) excuses.set(r.excused!, (excuses.get(r.excused!) ?? 0) + 1)
      totals.vectors += results.length
      totals.met += met
      totals.excused += excused.length
      totals.failed += failed.length
      totals.recvSteps += recvSteps
      totals.recvMatched += recvMatched
      totals.recvSameType += recvSameType
      console.log(
        `${file}: ${results.length} vectors, disconnect expectation met ${met}, gateway contract ${excused.length}, ` +
          `failed ${failed.length}; recv matched byte-exact ${recvMatched}/${recvSteps} (same packet type ${recvSameType})`,
      )
      // The listener is still serving: a fresh client connects and gets its acks, in both versions.
      for (const [ver, qos] of [
        [4, 1],
        [5, 1],
        [5, 2],
      ] as const) {
        assert.equal(
          await probe(p.mqttPort, probeDev, ver, qos),
          undefined,
          `after ${file}: v${ver} QoS ${qos}`,
        )
      }
      assert.deepEqual(escaped.splice(0), [], `exceptions escaped the gateway during ${file}`)
      assert.deepEqual(
        failed.map((r) => `${r.vector.name} (v${r.vector.ver}): ${r.failure}`),
        [],
        `${failed.length} of ${results.length} vectors in ${file} failed`,
      )
    })
  }

  test('summary: every vector was replayed and the gateway still serves', async () => {
    console.log(
      `mqtt-vectors: ${totals.vectors} vectors; disconnect expectation met ${totals.met}; ` +
        `other outcome by gateway contract ${totals.excused} (${[...excuses].map(([k, n]) => `${k}: ${n}`).join('; ')}); ` +
        `failed ${totals.failed}; recv matched byte-exact ${totals.recvMatched}/${totals.recvSteps} ` +
        `(same packet type ${totals.recvSameType})`,
    )
    // Every file's replay ran to its tally (a file test that threw early would leave its vectors out).
    assert.equal(
      totals.vectors,
      files.reduce((n, f) => n + loadVectors(f).length, 0),
    )
    assert.equal(await probe(p.mqttPort, probeDev, 4, 1), undefined)
  })
})
