import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { freePort } from '../../src/store/embedded.js'
import { type Platform, freshDatabase, startPlatform, waitFor } from '../helpers/index.js'
import { drained, rows } from '../helpers/stored.js'

const run = promisify(execFile)
const examples = new URL('../../../examples/', import.meta.url).pathname

/** A device client as its README runs it; its acked seqs and output as they come. */
function client(name: string, cmd: string, args: string[], env: Record<string, string> = {}) {
  // Its own process group: stopping the curl script stops the curl it runs too.
  const child = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  const c = {
    name,
    out: '',
    err: '',
    acked: new Set<number>(),
  }
  let partial = ''
  child.stdout.on('data', (d) => {
    c.out += d
    const lines = (partial + d).split('\n')
    partial = lines.pop()!
    for (const l of lines) {
      const m = /^acked seq=(\d+)$/.exec(l)
      if (m) c.acked.add(Number(m[1]))
    }
  })
  child.stderr.on('data', (d) => (c.err += d))
  return { c, child }
}

describe('the device examples (Go with paho.mqtt.golang, Python with paho-mqtt, curl) against the platform', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-examples-'))
  const bin = join(dataDir, 'iotcore-device')
  let p: Platform | undefined
  const children: Array<ReturnType<typeof spawn>> = []
  after(async () => {
    for (const ch of children)
      if (ch.exitCode === null && ch.signalCode === null) process.kill(-ch.pid!, 'SIGKILL')
    await p?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  })

  /** The Go client, built once from Debian's packages, no module download. */
  let built: Promise<unknown> | undefined
  const buildGo = () =>
    (built ??= run('go', ['build', '-o', bin, '.'], {
      cwd: join(examples, 'go'),
      env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOFLAGS: '' },
      timeout: 300_000,
    }))
  const stopAll = (cs: Array<{ child: ReturnType<typeof spawn> }>) =>
    Promise.all(
      cs.map(
        (x) =>
          new Promise((r) => {
            x.child.once('exit', r)
            process.kill(-x.child.pid!, 'SIGTERM')
          }),
      ),
    )

  test('each sends QoS 1 readings with msgId and seq, rides out a platform restart (what was unacked is sent again), and every acked reading is stored once', async () => {
    await buildGo()
    const databaseUrl = await freshDatabase()
    const env = { IOTCORE_HTTP_PORT: String(await freePort()), IOTCORE_MQTT_PORT: String(await freePort()) }
    const keep = { dataDir: join(dataDir, 'platform'), databaseUrl }
    p = await startPlatform(env, keep)
    const devs = {
      go: await p.createDevice('go'),
      python: await p.createDevice('python'),
      curl: await p.createDevice('curl'),
    }
    // No -count: they run until stopped, so the restart always finds them running.
    const clients = [
      client('go', bin, ['-broker', `tcp://127.0.0.1:${p.mqttPort}`, '-interval', '100ms'], {
        IOTCORE_DEVICE_ID: devs.go.id,
        IOTCORE_DEVICE_TOKEN: devs.go.token,
      }),
      client(
        'python',
        '/usr/bin/python3',
        [
          join(examples, 'python/device.py'),
          '--id',
          devs.python.id,
          '--token',
          devs.python.token,
          '--interval',
          '0.1',
        ],
        { IOTCORE_MQTT_HOST: '127.0.0.1', IOTCORE_MQTT_PORT: String(p.mqttPort) },
      ),
      client('curl', 'sh', [join(examples, 'curl/send.sh'), '-u', p.base, '-s', '0.1'], {
        IOTCORE_DEVICE_ID: devs.curl.id,
        IOTCORE_DEVICE_TOKEN: devs.curl.token,
      }),
    ]
    children.push(...clients.map((x) => x.child))
    const all = clients.map((x) => x.c)
    await waitFor(() => all.every((c) => c.acked.size >= 8), 60_000, 'each client to be acked a few readings')

    // The restart: the listeners close, the clients lose their connections and keep trying.
    const before = all.map((c) => Math.max(...c.acked))
    await p.stop()
    p = undefined
    await new Promise((r) => setTimeout(r, 1500))
    p = await startPlatform(env, keep)

    // Every reading up to 10 past the restart acked: those in flight or made during the outage were sent again.
    await waitFor(
      () =>
        all.every((c, i) =>
          Array.from({ length: before[i] + 10 }, (_, s) => s + 1).every((s) => c.acked.has(s)),
        ),
      120_000,
      'each client to be acked every reading through the outage',
    )
    await stopAll(clients)
    // Each met the outage: a lost connection (MQTT) or a request without an answer (HTTP).
    assert.match(all[0].err, /connection lost/, all[0].err)
    assert.match(all[1].err, /connection lost/, all[1].err)
    assert.match(all[2].err, /retrying/, all[2].err)

    await drained(p)
    for (const [i, [name, d]] of Object.entries(devs).entries()) {
      const rs = await rows(p, d.id)
      const seqs = rs.map((r) => r.values.seq as number)
      assert.equal(new Set(seqs).size, seqs.length, `${name}: no reading stored twice`)
      const stored = new Set(seqs)
      const missing = [...all[i].acked].filter((s) => !stored.has(s))
      assert.deepEqual(missing, [], `${name}: every acked reading stored`)
    }
  })

  test('Go and Python, created with "resend": true, lose seq 3..5; asked by the platform, they publish them again and answer: the gap closes, the command is replied, each reading stored once', async () => {
    await buildGo()
    const rp = await startPlatform()
    try {
      const devs = {
        go: await rp.createDevice('go-resend', { attributes: { resend: true } }),
        python: await rp.createDevice('python-resend', { attributes: { resend: true } }),
      }
      const clients = [
        client(
          'go',
          bin,
          ['-broker', `tcp://127.0.0.1:${rp.mqttPort}`, '-interval', '100ms', '-lose', '3-5'],
          { IOTCORE_DEVICE_ID: devs.go.id, IOTCORE_DEVICE_TOKEN: devs.go.token },
        ),
        client(
          'python',
          '/usr/bin/python3',
          [join(examples, 'python/device.py'), '--interval', '0.1', '--lose', '3-5'],
          {
            IOTCORE_MQTT_HOST: '127.0.0.1',
            IOTCORE_MQTT_PORT: String(rp.mqttPort),
            IOTCORE_DEVICE_ID: devs.python.id,
            IOTCORE_DEVICE_TOKEN: devs.python.token,
          },
        ),
      ]
      children.push(...clients.map((x) => x.child))
      const all = clients.map((x) => x.c)
      // 3..5 are acked only once resent.
      await waitFor(
        () => all.every((c) => Array.from({ length: 10 }, (_, s) => s + 1).every((s) => c.acked.has(s))),
        60_000,
        'each client to be acked 1..10, the lost range resent',
      )
      for (const [i, [name, d]] of Object.entries(devs).entries()) {
        assert.match(all[i].out, /^resend 3-5: 3 readings$/m, `${name}: ${all[i].out}`)
        const cmds = await waitFor(async () => {
          const r = await rp.req('GET', `/api/v1/devices/${d.id}/commands`)
          return r.body.items[0]?.status === 'replied' && r.body.items
        })
        assert.deepEqual(
          cmds.map((c: any) => [c.name, c.params, c.status, c.result]),
          [['resend', { from: 3, to: 5 }, 'replied', { resent: 3, unavailable: 0 }]],
          name,
        )
        const gaps = await waitFor(async () => {
          const r = await rp.req('GET', `/api/v1/devices/${d.id}/gaps?status=all`)
          return r.body.gaps[0]?.status === 'closed' && r.body.gaps
        })
        assert.deepEqual(
          gaps.map((g: any) => [g.from, g.to, g.missing]),
          [[3, 5, []]],
          name,
        )
      }
      // A range already stored, asked for by hand: republished with the msgIds it had, stored once.
      for (const [name, d] of Object.entries(devs)) {
        const r = await rp.req('POST', `/api/v1/devices/${d.id}/commands`, {
          name: 'resend',
          params: { from: 1, to: 8 },
        })
        assert.equal(r.status, 201)
        const done = await waitFor(async () => {
          const c = (await rp.req('GET', `/api/v1/devices/${d.id}/commands/${r.body.id}`)).body
          return c.status === 'replied' && c
        })
        assert.deepEqual(done.result, { resent: 8, unavailable: 0 }, name)
      }
      await stopAll(clients)
      await drained(rp)
      for (const [name, d] of Object.entries(devs)) {
        const seqs = (await rows(rp, d.id)).map((r) => r.values.seq as number)
        assert.equal(new Set(seqs).size, seqs.length, `${name}: no reading stored twice`)
        for (let s = 1; s <= 10; s++) assert.ok(seqs.includes(s), `${name}: seq ${s} stored`)
      }
    } finally {
      await rp.stop()
    }
  })
})
