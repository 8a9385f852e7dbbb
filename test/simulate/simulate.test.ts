import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Summary, runSimulate } from '../../src/simulate/cli.js'
import { FLAGGED } from '../../src/simulate/faults.js'
import { prng } from '../../src/lib/prng.js'
import { Vehicle } from '../../src/simulate/vehicle.js'
import { ADMIN_TOKEN, type Platform, startPlatform } from '../helpers/index.js'
import { type Row, drained, rows } from '../helpers/stored.js'

const root = new URL('../../../', import.meta.url).pathname

describe('a simulated vehicle', () => {
  test('drives its route: heading is the road bearing, the odometer only grows, no speeding, rpm 0 with the ignition off and idle when stopped', () => {
    const v = new Vehicle({ lat: 37.98, lon: 23.72 }, prng(7))
    // Low on fuel, so the drive includes a refuelling stop.
    v.fuel = 13
    let odo = v.odometer
    const seen = new Set<string>()
    for (let t = 0; t < 8 * 3600; t++) {
      v.step(1)
      const x = v.values()
      assert.ok((x.odometer as number) >= odo)
      odo = x.odometer as number
      assert.ok(v.route.some((s) => s.bearing === v.heading))
      assert.ok((x.speed as number) <= 110 * 1.05 + 0.1, `speed ${x.speed}`)
      if (!x.ignition) assert.equal(x.rpm, 0)
      if (x.ignition && x.speed === 0) assert.equal(x.rpm, 800)
      seen.add(v.activity)
    }
    assert.deepEqual([...seen].sort(), ['driving', 'parked', 'refuelling', 'stopped'])
  })

  test('fuel drains while it drives, and a low tank ends in a refuelling stop back to full', () => {
    const v = new Vehicle({ lat: 37.98, lon: 23.72 }, prng(3))
    v.fuel = 13
    let lowest = 100
    let refuelled = false
    for (let t = 0; t < 6 * 3600 && !refuelled; t++) {
      v.step(1)
      lowest = Math.min(lowest, v.fuel)
      refuelled = lowest < 12 && v.fuel > 99
    }
    assert.ok(refuelled, `lowest ${lowest}`)
  })

  test('the coolant warms towards 90 °C with the engine running', () => {
    const v = new Vehicle({ lat: 37.98, lon: 23.72 }, prng(5))
    v.coolant = 20
    v.step(20 * 60)
    assert.ok(v.coolant > 70, String(v.coolant))
  })

  test('a route goes out and comes back to where it started', () => {
    const v = new Vehicle({ lat: 37.98, lon: 23.72 }, prng(11))
    const last = v.route.at(-1)!
    const rad = (last.bearing * Math.PI) / 180
    assert.ok(Math.abs(last.x + Math.sin(rad) * last.length) < 1e-6)
    assert.ok(Math.abs(last.y + Math.cos(rad) * last.length) < 1e-6)
  })
})

/** The platform's thresholds for the faults' alerts, short enough for a few seconds of simulation. */
const SHORT_WINDOWS = {
  IOTCORE_OFFLINE_AFTER: '2',
  IOTCORE_GAP_ALERT_AFTER: '1',
  IOTCORE_CHECK_INTERVAL: '1',
  IOTCORE_TELTONIKA_PORT: '0',
  IOTCORE_OSMAND_PORT: '0',
  IOTCORE_JSONL_PORT: '0',
}

/** Readings per second per vehicle in the short runs: the GPS jumps take 29 readings to play out. */
const PER_VEHICLE = 25

describe('iotcore simulate against a running platform', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform(SHORT_WINDOWS)
  })
  after(() => p.stop())

  const env = () => ({
    IOTCORE_URL: p.base,
    IOTCORE_MQTT_PORT: String(p.mqttPort),
    IOTCORE_TELTONIKA_PORT: String(p.app.teltonika!.port),
    IOTCORE_OSMAND_PORT: String(p.app.osmand!.port),
    IOTCORE_JSONL_PORT: String(p.app.jsonl!.port),
    IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
  })
  async function simulate(args: string[]): Promise<{ summary: Summary; out: string; err: string }> {
    let out = ''
    let err = ''
    const summary = await runSimulate(args, {
      out: (l) => (out += `${l}\n`),
      err: (t) => (err += t),
      isTTY: false,
      env: env(),
    })
    assert.notEqual(typeof summary, 'number', err)
    return { summary: summary as Summary, out, err }
  }
  /** A few seconds of `devices` vehicles over `protocol`, its faults waited for (a liveness bound). */
  const short = (protocol: string, prefix: string, devices = 6) =>
    simulate([
      ...['--protocol', protocol, '--prefix', prefix, '--devices', String(devices)],
      ...['--rate', String(devices * PER_VEHICLE), '--duration', '3', '--wait', '60'],
    ])

  /**
   * Every reading acked was stored, once: the rows of the run's devices are as many as the acks (beyond the
   * `earlier` rows of devices reused from another run).
   */
  async function storedExactly(summary: Summary, earlier = 0): Promise<Map<string, Row[]>> {
    assert.equal(summary.refused, 0, JSON.stringify(summary.refusals))
    assert.equal(summary.unanswered, 0)
    assert.equal(summary.acked, summary.sent)
    assert.ok(summary.acked > 0)
    await drained(p)
    const byDevice = new Map<string, Row[]>()
    for (const d of summary.devices) byDevice.set(d.id, await rows(p, d.id))
    assert.equal(
      [...byDevice.values()].reduce((n, rs) => n + rs.length, 0),
      earlier + summary.acked,
    )
    return byDevice
  }

  /** Each fault injected was caught, as the summary says and as the API shows its alert. */
  async function allCaught(summary: Summary, out: string, kinds: string[]): Promise<void> {
    assert.deepEqual(
      summary.faults.map((c) => c.device.fault),
      kinds,
    )
    for (const c of summary.faults) assert.ok(c.caught, `${c.device.fault}: ${c.detail}`)
    assert.match(out, new RegExp(`faults caught: ${kinds.length}/${kinds.length}\n`))
    const expected: Record<string, string> = {
      gps_zero: 'device_check',
      gps_jump: 'device_check',
      silent: 'offline',
      seq_gap: 'sequence_gap',
    }
    for (const c of summary.faults) {
      const a = await p.req('GET', `/api/v1/alerts/${c.alertId}`)
      assert.equal(a.status, 200)
      assert.equal(a.body.deviceId, c.device.id)
      assert.equal(a.body.type, expected[c.device.fault])
    }
  }

  test('mqtt: every reading acked and stored once, with seq numbers, OBD-II values, and every fault caught', async () => {
    const { summary, out, err } = await short('mqtt', 'sim')
    assert.match(
      err,
      /^sent \d+ {2}acked \d+ {2}refused 0 {2}rate [\d.]+\/s {2}pending \d+ {2}connected 6\/6/m,
    )
    assert.match(out, /readings: sent (\d+), acked \1, refused 0, unanswered 0/)
    const stored = await storedExactly(summary)
    for (const d of summary.devices) {
      const rs = stored.get(d.id)!
      const seqs = rs.map((r) => r.values.seq as number).sort((a, b) => a - b)
      for (const k of ['lat', 'lon', 'speed', 'heading', 'ignition', 'rpm', 'fuel', 'coolant', 'odometer'])
        assert.ok(k in rs[0].values, `${d.name} sends ${k}`)
      const gaps = seqs.slice(1).filter((s, i) => s !== seqs[i] + 1).length
      if (d.fault === 'seq_gap') {
        assert.equal(gaps, 1, `${d.name}: one gap`)
        assert.ok(seqs.includes(6) && seqs.includes(12) && !seqs.includes(7))
      } else assert.equal(gaps, 0, `${d.name}: seq numbers without a gap`)
      const zero = rs.filter((r) => r.values.lat === 0 && r.values.lon === 0).length
      assert.equal(zero, d.fault === 'gps_zero' ? FLAGGED : 0, d.name)
      if (d.fault === 'silent') assert.equal(rs.length, 10, 'silent after its tenth reading')
      if (d.fault === 'gps_jump') {
        const bySeq = new Map(rs.map((r) => [r.values.seq as number, r.values.lat as number]))
        assert.ok(
          bySeq.get(7)! - bySeq.get(6)! > 1.4 && bySeq.get(8)! - bySeq.get(6)! < 0.1,
          'one reading ~170 km off, the next back',
        )
        const jumped = rs.filter((r) => (r.values.lat as number) > 39).length
        assert.equal(jumped, FLAGGED, 'jumps enough to cross the device check threshold')
      }
    }
    await allCaught(summary, out, ['gps_zero', 'gps_jump', 'silent', 'seq_gap'])
  })

  test('teltonika: trackers known by IMEI send Codec 8 Extended packets, every record stored once with its OBD IO elements, and the GPS and silence faults caught', async () => {
    const { summary, out } = await short('teltonika', 'tel')
    const stored = await storedExactly(summary)
    for (const d of summary.devices) {
      const rs = stored.get(d.id)!
      for (const k of [
        'lat',
        'lon',
        'speed',
        'heading',
        'ignition',
        'vehicleSpeed',
        'rpm',
        'coolantTemperature',
        'obdFuelLevel',
        'totalOdometer',
      ])
        assert.ok(k in rs[0].values, `${d.name} sends ${k}`)
      assert.equal(typeof rs[0].values.ignition, 'boolean')
      const zero = rs.filter((r) => r.values.lat === 0 && r.values.lon === 0).length
      assert.equal(zero, d.fault === 'gps_zero' ? FLAGGED : 0, d.name)
    }
    await allCaught(summary, out, ['gps_zero', 'gps_jump', 'silent'])
    assert.match(out, /seq_gap not injected over teltonika: .*no sequence number/)
  })

  test('osmand: Traccar Client forms by IMEI, every fix stored once with its values, and every fault caught', async () => {
    const { summary, out } = await short('osmand', 'osm')
    const stored = await storedExactly(summary)
    for (const d of summary.devices) {
      const rs = stored.get(d.id)!
      for (const k of [
        'lat',
        'lon',
        'speed',
        'heading',
        'ignition',
        'rpm',
        'fuel',
        'coolant',
        'odometer',
        'seq',
      ])
        assert.ok(k in rs[0].values, `${d.name} sends ${k}`)
      assert.ok(rs.every((r) => r.msgId.startsWith('osmand-')))
    }
    await allCaught(summary, out, ['gps_zero', 'gps_jump', 'silent', 'seq_gap'])
  })

  test('jsonl: one reading a line after the id and token, every line answered and stored once, and every fault caught', async () => {
    const { summary, out } = await short('jsonl', 'jl')
    const stored = await storedExactly(summary)
    for (const d of summary.devices) {
      const rs = stored.get(d.id)!
      for (const k of ['lat', 'lon', 'speed', 'rpm', 'fuel', 'coolant', 'odometer', 'seq'])
        assert.ok(k in rs[0].values, `${d.name} sends ${k}`)
    }
    await allCaught(summary, out, ['gps_zero', 'gps_jump', 'silent', 'seq_gap'])
  })

  test('http: the same vehicles are reused with new tokens, and every reading is acked and stored', async () => {
    const listed = (await p.req('GET', '/api/v1/devices?limit=1000')).body.devices as Array<{ name: string }>
    await drained(p)
    let earlier = 0
    for (const d of (await p.req('GET', '/api/v1/devices?limit=1000')).body.devices)
      if (/^sim-000[1-6]$/.test(d.name)) earlier += (await rows(p, d.id)).length
    assert.ok(earlier > 0, 'the mqtt run stored readings of these vehicles')
    const { summary } = await simulate([
      ...['--devices', '6', '--rate', '40', '--duration', '2', '--protocol', 'http', '--faults', '0'],
    ])
    assert.equal(
      (await p.req('GET', '/api/v1/devices?limit=1000')).body.devices.length,
      listed.length,
      'no new devices',
    )
    await storedExactly(summary, earlier)
  })

  test('a device registered without an IMEI cannot be a tracker: the run says so and which prefix to change', async () => {
    await p.createDevice('old-0001')
    let err = ''
    const code = await runSimulate(['--protocol', 'teltonika', '--prefix', 'old', '--devices', '1'], {
      out: () => {},
      err: (t) => (err += t),
      isTTY: false,
      env: env(),
    })
    assert.equal(code, 1)
    assert.match(err, /old-0001 was registered without an imei, .* give the fleet another --prefix/)
  })

  test('a protocol this build does not send is a usage error naming the ones it does', async () => {
    let err = ''
    const code = await runSimulate(['--protocol', 'carrier-pigeon'], {
      out: () => {},
      err: (t) => (err += t),
      isTTY: false,
      env: env(),
    })
    assert.equal(code, 1)
    assert.match(err, /--protocol carrier-pigeon: this build sends mqtt, http, teltonika, osmand, jsonl/)
  })

  test('`iotcore simulate --devices 100` runs for a minute with its progress line and a summary, and its faults open the expected alerts', async () => {
    const child = spawn(
      process.execPath,
      [
        join(root, 'dist/src/cli/main.js'),
        'simulate',
        ...['--devices', '100', '--rate', '100', '--duration', '60', '--wait', '60', '--prefix', 'minute'],
      ],
      { env: { ...process.env, ...env() }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const code = await new Promise((r) => child.once('exit', r))
    assert.equal(code, 0, err)
    const progress = err.split('\n').filter((l) => /^sent \d+ {2}acked \d+/.test(l))
    // A line a second; a busy machine may run a timer late, and a late interval does not fire twice.
    assert.ok(progress.length >= 30, `progress lines: ${progress.length}`)
    const ran = Number(/simulated 100 vehicles over mqtt for ([\d.]+) s/.exec(out)?.[1])
    assert.ok(ran >= 60, out)
    assert.match(out, /readings: sent (\d+), acked \1, refused 0, unanswered 0/)
    assert.match(out, /faults caught: 4\/4\n/)
    for (const [fault, by] of [
      [
        'gps_zero',
        /12 readings flagged gps_zero -> device_check alert \d+ \(\d+ violations within 3600 s, threshold 10\)/,
      ],
      ['gps_jump', /12 readings flagged gps_jump -> device_check alert \d+/],
      ['silent', /offline alert \d+ \(last seen [\d:]+, offline after 2 s\)/],
      ['seq_gap', /gap 7\.\.11 reported \(5 missing\) -> sequence_gap alert \d+/],
    ] as const)
      assert.match(out, new RegExp(`minute-\\d+ ${fault}: ${by.source}`))
  })
})
