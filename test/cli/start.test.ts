import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, describe, test } from 'node:test'
import { GiveUp, waitFor } from '../helpers/index.js'

const run = promisify(execFile)
const root = new URL('../../../', import.meta.url).pathname
const main = join(root, 'dist/src/cli/main.js')

/** `iotcore start` as a user runs it: its own process, the embedded PostgreSQL, the data dir. */
function start(
  dataDir: string,
  env: Record<string, string> = {},
  args: string[] = [],
): {
  child: ChildProcess
  out: () => string
  ready: Promise<{ http: number; mqtt: number; banner: string }>
} {
  const child = spawn(process.execPath, [main, 'start', ...args], {
    env: {
      ...process.env,
      IOTCORE_DATA_DIR: dataDir,
      IOTCORE_HOST: '127.0.0.1',
      IOTCORE_HTTP_PORT: '0',
      IOTCORE_MQTT_PORT: '0',
      // Free ports, not the defaults: a fixed port would collide with any other iotcore on the machine.
      IOTCORE_TELTONIKA_PORT: '0',
      IOTCORE_OSMAND_PORT: '0',
      IOTCORE_JSONL_PORT: '0',
      IOTCORE_SIGNAL_PORT: '0',
      IOTCORE_LOG_LEVEL: 'warn',
      DATABASE_URL: '',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  // Rejects if the process exits first. The banner is one write of less than a pipe's atomic size: whole once
  // its first line is there. Ports it does not list are 0.
  const ready = waitFor(
    () => {
      if (child.exitCode !== null) throw new GiveUp(`iotcore start exited with ${child.exitCode}: ${out}`)
      const at = out.indexOf('iotcore is running')
      if (at < 0) return undefined
      const banner = out.slice(at)
      const http = /health\s+http:\/\/[^:]+:(\d+)/.exec(banner)
      const mqtt = /MQTT\s+mqtt:\/\/[^:]+:(\d+)/.exec(banner)
      return { http: Number(http?.[1] ?? 0), mqtt: Number(mqtt?.[1] ?? 0), banner }
    },
    60_000,
    'the start banner',
  )
  return { child, out: () => out, ready }
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code))
    child.kill('SIGTERM')
  })
}

describe('iotcore start on embedded defaults', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-cli-'))
  after(() => rmSync(dataDir, { recursive: true, force: true }))

  test('prints URLs and the admin token once; devices and data survive a restart', async () => {
    const first = start(dataDir)
    const { http, mqtt } = await first.ready
    const token = /admin token \(shown once[^\n]*\n\s+(\S+)/.exec(first.out())?.[1]
    assert.ok(token, `admin token printed:\n${first.out()}`)

    // `iotcore device create` next to the running server uses its PostgreSQL.
    const created = JSON.parse(
      (
        await run(process.execPath, [main, 'device', 'create', 'truck-7', '--imei', '356307042441013'], {
          env: { ...process.env, IOTCORE_DATA_DIR: dataDir, IOTCORE_LOG_LEVEL: 'warn', DATABASE_URL: '' },
        })
      ).stdout,
    )
    assert.match(created.id, /^d/)
    assert.match(created.token, /^iot_/)

    for (const [i, version] of [
      [1, 'mqttv311'],
      [2, 'mqttv5'],
    ] as const) {
      await run('mosquitto_pub', [
        '-h',
        '127.0.0.1',
        '-p',
        String(mqtt),
        '-V',
        version,
        '-q',
        '1',
        '-i',
        `cli-${i}`,
        '-u',
        created.id,
        '-P',
        created.token,
        '-t',
        `devices/${created.id}/telemetry`,
        '-m',
        JSON.stringify({ ts: 1732330000000 + i, msgId: `m${i}`, lat: 37.98, lon: 23.72, speed: 50 + i }),
      ])
    }
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${http}/api/v1${path}`, {
        headers: { authorization: `Bearer ${token}` },
      })
      return r.json()
    }
    await waitFor(async () => (await get(`/devices/${created.id}/telemetry?keys=speed`)).speed?.length === 2)
    assert.equal(await stop(first.child), 0, 'SIGTERM shuts down cleanly')

    const second = start(dataDir)
    const again = await second.ready
    assert.doesNotMatch(second.out(), /shown once/, 'the token is printed only on the first start')
    const res = await fetch(
      `http://127.0.0.1:${again.http}/api/v1/devices/${created.id}/telemetry?keys=speed&order=asc`,
      {
        headers: { authorization: `Bearer ${token}` },
      },
    )
    assert.deepEqual((await res.json()).speed, [
      { ts: 1732330000001, value: 51 },
      { ts: 1732330000002, value: 52 },
    ])
    assert.equal(await stop(second.child), 0)
  })
})

describe('iotcore start with some roles', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-cli-'))
  after(() => rmSync(dataDir, { recursive: true, force: true }))

  test('the banner lists only what the process runs: no REST API line without the api role, no MQTT without the gateway', async () => {
    const gateway = start(dataDir, {}, ['--roles', 'gateway,ingest'])
    const g = await gateway.ready
    assert.doesNotMatch(g.banner, /REST API|admin token|docs/, g.banner)
    assert.match(g.banner, /roles: gateway, ingest/)
    assert.match(g.banner, /HTTP ingest POST http:\/\/\S+\/telemetry/)
    assert.match(
      g.banner,
      /devices\s+Teltonika \S+:\d+\s+OsmAnd http:\/\/\S+:\d+\s+JSON lines \S+:\d+\s+signal \S+:\d+/,
    )
    assert.ok(g.mqtt > 0, g.banner)
    // What it lists answers: the API it does not list does not.
    const api = await fetch(`http://127.0.0.1:${g.http}/api/v1/devices`)
    assert.equal(api.status, 404)
    assert.equal(await stop(gateway.child), 0)

    const admin = start(dataDir, {}, ['--roles', 'api,ingest'])
    const a = await admin.ready
    assert.match(a.banner, /REST API\s+http:\/\/\S+\/api\/v1/)
    assert.match(a.banner, /admin token \(shown once/, 'the first process serving the API shows the token')
    assert.doesNotMatch(a.banner, /MQTT|HTTP ingest|WebSocket|OsmAnd/, a.banner)
    assert.equal(await stop(admin.child), 0)
  })
})

describe('iotcore start that cannot finish starting', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-cli-'))
  after(() => rmSync(dataDir, { recursive: true, force: true }))

  test('a taken MQTT port: exits 1 with the error, and the embedded PostgreSQL it started is stopped', async () => {
    const taken = createServer()
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
    try {
      const run = start(dataDir, { IOTCORE_MQTT_PORT: String((taken.address() as { port: number }).port) })
      // It never gets ready: the exit is what this test waits for.
      run.ready.catch(() => {})
      const code = await new Promise<number | null>((resolve) => run.child.once('exit', resolve))
      assert.equal(code, 1, run.out())
      assert.match(run.out(), /EADDRINUSE/)
      assert.ok(existsSync(join(dataDir, 'pg', 'PG_VERSION')), 'PostgreSQL had started')
      // The owner file is removed only by a stop of the server this process started.
      assert.equal(existsSync(join(dataDir, 'postgres.json')), false, run.out())
    } finally {
      taken.close()
    }
  })
})
