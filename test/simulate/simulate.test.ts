import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Summary, runSimulate } from '../../src/simulate/cli.js'
import { Vehicle, prng } from '../../src/simulate/vehicle.js'
import { ADMIN_TOKEN, type Platform, startPlatform } from '../helpers/index.js'
import { drained, rows } from '../helpers/stored.js'

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

describe('iotcore simulate against a running platform', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const env = () => ({
    IOTCORE_URL: p.base,
    IOTCORE_MQTT_PORT: String(p.mqttPort),
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

  test('mqtt: every reading acked and stored once, with seq numbers, OBD-II values and the injected faults', async () => {
    const { summary, out, err } = await simulate(['--devices', '12', '--rate', '60', '--duration', '3'])
    assert.equal(summary.refused, 0)
    assert.equal(summary.unanswered, 0)
    assert.equal(summary.acked, summary.sent)
    assert.match(
      err,
      /^sent \d+ {2}acked \d+ {2}refused 0 {2}rate [\d.]+\/s {2}pending \d+ {2}connected 12\/12/m,
    )
    assert.match(out, /readings: sent (\d+), acked \1, refused 0, unanswered 0/)
    await drained(p)
    let stored = 0
    for (const d of summary.devices) {
      const rs = await rows(p, d.id)
      stored += rs.length
      const seqs = rs.map((r) => r.values.seq as number).sort((a, b) => a - b)
      for (const k of ['lat', 'lon', 'speed', 'heading', 'ignition', 'rpm', 'fuel', 'coolant', 'odometer'])
        assert.ok(k in rs[0].values, `${d.name} sends ${k}`)
      const gaps = seqs.slice(1).filter((s, i) => s !== seqs[i] + 1).length
      if (d.fault === 'seq_gap') {
        assert.equal(gaps, 1, `${d.name}: one gap`)
        assert.ok(seqs.includes(6) && seqs.includes(12) && !seqs.includes(7))
      } else assert.equal(gaps, 0, `${d.name}: seq numbers without a gap`)
      const zero = rs.filter((r) => r.values.lat === 0 && r.values.lon === 0).length
      assert.equal(zero, d.fault === 'gps_zero' ? 5 : 0, d.name)
      if (d.fault === 'silent') assert.equal(rs.length, 10, 'silent after its tenth reading')
      if (d.fault === 'gps_jump') {
        const bySeq = new Map(rs.map((r) => [r.values.seq as number, r.values.lat as number]))
        assert.ok(
          bySeq.get(7)! - bySeq.get(6)! > 1.4 && bySeq.get(8)! - bySeq.get(6)! < 0.1,
          'one reading ~170 km off',
        )
      }
    }
    assert.equal(stored, summary.acked)
    assert.deepEqual(
      summary.devices.filter((d) => d.fault).map((d) => d.fault),
      ['gps_zero', 'gps_jump', 'silent', 'seq_gap'],
    )
  })

  test('http: the same vehicles are reused with new tokens, and every reading is acked and stored', async () => {
    const before = (await p.req('GET', '/api/v1/devices?limit=1000')).body.devices.length
    const { summary } = await simulate([
      '--devices',
      '12',
      '--rate',
      '40',
      '--duration',
      '2',
      '--protocol',
      'http',
    ])
    assert.equal(
      (await p.req('GET', '/api/v1/devices?limit=1000')).body.devices.length,
      before,
      'no new devices',
    )
    assert.equal(summary.refused, 0)
    assert.equal(summary.unanswered, 0)
    assert.equal(summary.acked, summary.sent)
    assert.ok(summary.acked > 0)
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
    assert.match(err, /--protocol carrier-pigeon: this build sends mqtt, http/)
  })

  test('`iotcore simulate --devices 100` runs for a minute with its progress line and a summary', async () => {
    const child = spawn(
      process.execPath,
      [
        join(root, 'dist/src/cli/main.js'),
        'simulate',
        '--devices',
        '100',
        '--rate',
        '100',
        '--duration',
        '60',
        '--prefix',
        'minute',
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
  })
})
