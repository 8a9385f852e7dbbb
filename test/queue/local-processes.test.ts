import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { freshDatabase, LISTENERS_OFF, waitFor } from '../helpers/index.js'

const run = promisify(execFile)
const main = join(new URL('../../../', import.meta.url).pathname, 'dist/src/cli/main.js')

interface Process {
  child: ChildProcess
  out: () => string
  exited: Promise<number | null>
}

/** `iotcore ...` as an operator runs it, in its own process, on the given data dir and database. */
function iotcore(args: string[], env: Record<string, string>): Process {
  const child = spawn(process.execPath, [main, ...args], {
    env: { ...process.env, ...LISTENERS_OFF, IOTCORE_HOST: '127.0.0.1', IOTCORE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, out: () => out, exited }
}

/** The port a started process printed in its banner for `label` (MQTT, health). */
function port(p: Process, label: string): Promise<number> {
  const re = new RegExp(`${label}\\s+\\w+://[^:]+:(\\d+)`)
  return waitFor(
    () => {
      if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}:\n${p.out()}`)
      const m = re.exec(p.out())
      return m ? Number(m[1]) : 0
    },
    60_000,
    `the ${label} line of the start banner`,
  )
}

/** Publishes readings `from`..`from + n - 1` at QoS 1; mosquitto_pub ends once each was acknowledged. */
async function publish(mqttPort: number, dev: { id: string; token: string }, from: number, n: number) {
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({ msgId: `m${from + i}`, ts: 1732330000000 + from + i, speed: i }),
  )
  const pub = spawn(
    'mosquitto_pub',
    ['-h', '127.0.0.1', '-p', String(mqttPort), '-V', 'mqttv5', '-q', '1', '-i', `pub-${from}`].concat([
      '-u',
      dev.id,
      '-P',
      dev.token,
      '-t',
      `devices/${dev.id}/telemetry`,
      '-l',
    ]),
    { stdio: ['pipe', 'ignore', 'inherit'] },
  )
  pub.stdin!.end(lines.join('\n') + '\n')
  const code = await new Promise((resolve) => pub.once('exit', resolve))
  assert.equal(code, 0, 'mosquitto_pub got its acknowledgements')
}

async function stored(httpPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(/^iotcore_messages_stored_total(?:\{[^}]*\})? (\d+)$/gm)) sum += Number(m[1])
  return sum
}

describe('local queue across processes: one appender per data dir', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-appenders-'))
  const running: Process[] = []
  let env: Record<string, string>
  let dev: { id: string; token: string }
  let gateway: Process
  let gatewayMqtt: number
  let ingestHttp: number

  const start = (roles: string, extra: Record<string, string>) => {
    const p = iotcore(['start', '--roles', roles], { ...env, ...extra })
    running.push(p)
    return p
  }
  const startGateway = () => start('gateway', { IOTCORE_MQTT_PORT: '0', IOTCORE_HTTP_PORT: 'off' })

  before(async () => {
    env = { IOTCORE_DATA_DIR: dataDir, DATABASE_URL: await freshDatabase(), IOTCORE_INGEST_BATCH_MS: '10' }
    const { stdout } = await run(process.execPath, [main, 'device', 'create', 'appenders'], {
      env: { ...process.env, ...env, IOTCORE_LOG_LEVEL: 'warn' },
    })
    dev = JSON.parse(stdout)
  })
  after(async () => {
    for (const p of running) {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
      await p.exited
    }
    rmSync(dataDir, { recursive: true, force: true })
  })

  test('a second gateway process on the data dir is refused at start, with the error that names RabbitMQ, and acknowledges nothing', async () => {
    gateway = startGateway()
    gatewayMqtt = await port(gateway, 'MQTT')

    const second = startGateway()
    const outcome = await waitFor(
      () => (second.child.exitCode !== null ? 'exited' : /mqtt:\/\//.test(second.out()) ? 'listening' : ''),
      60_000,
      'the second gateway process to exit or listen',
    )
    assert.equal(outcome, 'exited', `refused at start:\n${second.out()}`)
    assert.equal(second.child.exitCode, 1)
    assert.match(
      second.out(),
      new RegExp(
        `IOT_ERR_QUEUE_LOCKED: The local queue in \\S+ already has its appending process \\(pid ${gateway.child.pid}\\)`,
      ),
    )
    assert.match(second.out(), /set AMQP_URL to use RabbitMQ/)
    // The queue starts before any listener: the refused process never took a device's message.
    assert.doesNotMatch(second.out(), /mqtt:\/\//, 'it never listened')

    // The first one is untouched.
    await publish(gatewayMqtt, dev, 0, 50)
  })

  test('an ingest process on the same data dir stores what the gateway process acknowledged, while it appends', async () => {
    const ingest = start('ingest', { IOTCORE_MQTT_PORT: 'off', IOTCORE_HTTP_PORT: '0' })
    ingestHttp = await port(ingest, 'health')
    await waitFor(async () => (await stored(ingestHttp)) === 50, 30_000, '50 readings stored')
    // Appends and removals now interleave: the gateway commits while the ingest deletes what it stored.
    await Promise.all([publish(gatewayMqtt, dev, 50, 200), publish(gatewayMqtt, dev, 250, 200)])
    await waitFor(async () => (await stored(ingestHttp)) === 450, 30_000, '450 readings stored')
  })

  test('after the appending process is SIGKILLed, a new one starts and its readings are stored too', async () => {
    gateway.child.kill('SIGKILL')
    await gateway.exited
    const next = startGateway()
    const nextMqtt = await port(next, 'MQTT')
    await publish(nextMqtt, dev, 450, 50)
    await waitFor(async () => (await stored(ingestHttp)) === 500, 30_000, 'all 500 readings stored')
  })
})
