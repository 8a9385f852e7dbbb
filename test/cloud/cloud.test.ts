import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, beforeEach, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { runCloud } from '../../src/cloud/cli.js'
import { freePort } from '../../src/store/embedded.js'
import { ADMIN_TOKEN, type Platform, startPlatform } from '../helpers/index.js'
import { FakeDigitalOcean } from './digitalocean-api.js'

const run = promisify(execFile)
const root = new URL('../../../', import.meta.url).pathname
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version

/** One `iotcore cloud` run against the local DigitalOcean API, on a clock that its waits move forward. */
interface Run {
  code: number
  out: string
  err: string
}

describe('iotcore cloud against a local server following DigitalOcean API v2', () => {
  let platform: Platform
  let fake: FakeDigitalOcean
  let clock = 0
  let waits: number[] = []
  const closedPort = { port: 0 }

  before(async () => {
    // The droplet's iotcore: a real platform whose HTTP port the reserved IP (127.0.0.1 here) leads to.
    const http = await freePort()
    platform = await startPlatform({ IOTCORE_HTTP_PORT: String(http) })
    closedPort.port = await freePort()
  })
  after(async () => {
    await platform.stop()
  })
  beforeEach(async () => {
    await fake?.stop()
    fake = new FakeDigitalOcean()
    await fake.start()
    clock = Date.UTC(2026, 10, 29, 12, 0, 0)
    waits = []
    fake.now = () => clock
  })
  after(() => fake?.stop())

  async function cloud(args: string[], env: Record<string, string> = {}): Promise<Run> {
    let out = ''
    let err = ''
    const code = await runCloud(args, {
      out: (l) => (out += `${l}\n`),
      err: (t) => (err += t),
      isTTY: false,
      env: {
        DIGITALOCEAN_TOKEN: fake.token,
        DIGITALOCEAN_API_URL: fake.base,
        IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
        ...env,
      },
      now: () => clock,
      pollMs: 3000,
      // Waits move the clock instead of holding the test; a yield lets real servers answer meanwhile.
      sleep: async (ms) => {
        waits.push(ms)
        clock += ms
        await new Promise((r) => setImmediate(r))
      },
    })
    return { code, out, err }
  }

  const up = (name: string, ...more: string[]) => {
    fake.reservedIpPool.push('127.0.0.1')
    return cloud([
      'up',
      name,
      '--http-port',
      String(platform.httpPort),
      '--mqtt-port',
      String(platform.mqttPort),
      ...more,
    ])
  }

  test('up: a droplet whose cloud-init installs iotcore as a service, a reserved IP, /readyz waited for; the printed URL and admin token work; down deletes droplet, IP and tags', async () => {
    const r = await up('demo', '--region', 'ams3', '--ssh-key', '12345')
    assert.equal(r.code, 0, r.err)
    const [d] = fake.droplets.values()
    assert.equal(fake.droplets.size, 1)
    assert.deepEqual(
      [d.name, d.region.slug, d.size_slug, d.image.slug],
      ['demo', 'ams3', 's-1vcpu-2gb', 'ubuntu-24-04-x64'],
    )
    assert.deepEqual(d.tags, ['iotcore', 'iotcore:demo'])

    assert.match(d.user_data, /^#cloud-config\n/)
    const ci = parse(d.user_data)
    const files = Object.fromEntries(
      ci.write_files.map((f: { path: string; content: string }) => [f.path, f.content]),
    )
    assert.match(files['/etc/iotcore/iotcore.env'], new RegExp(`^IOTCORE_ADMIN_TOKEN=${ADMIN_TOKEN}$`, 'm'))
    assert.match(
      files['/etc/iotcore/iotcore.env'],
      new RegExp(`^IOTCORE_HTTP_PORT=${platform.httpPort}$`, 'm'),
    )
    assert.match(files['/etc/systemd/system/iotcore.service'], /^ExecStart=\/usr\/bin\/iotcore start$/m)
    assert.match(files['/etc/systemd/system/iotcore.service'], /^User=iotcore$/m)
    assert.ok(ci.runcmd.includes(`npm install -g --no-audit --no-fund iotcore@${version}`), ci.runcmd)
    assert.equal(ci.runcmd.at(-1), 'systemctl enable --now iotcore')

    assert.equal(fake.reservedIps.get('127.0.0.1')?.droplet_id, d.id, 'the reserved IP is assigned to it')
    assert.match(r.err, new RegExp(`droplet ${d.id} booting`))
    assert.match(r.err, /reserved IP 127\.0\.0\.1 assigned/)
    const api = /REST API\s+(\S+)/.exec(r.out)?.[1]
    const token = /admin token: (\S+)/.exec(r.out)?.[1]
    assert.equal(api, `http://127.0.0.1:${platform.httpPort}/api/v1`)
    const devices = await fetch(`${api}/devices`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(devices.status, 200)

    const listed = await cloud(['list'])
    assert.match(
      listed.out,
      new RegExp(`^demo\\s+${d.id}\\s+active\\s+ams3\\s+s-1vcpu-2gb\\s+127\\.0\\.0\\.1\\s`, 'm'),
    )

    const taken = await up('demo')
    assert.equal(taken.code, 1)
    assert.match(taken.err, /a droplet named demo exists/)

    const down = await cloud(['down', 'demo'])
    assert.equal(down.code, 0, down.err)
    assert.match(down.out, new RegExp(`deleted reserved IP 127\\.0\\.0\\.1, droplet ${d.id}`))
    assert.equal(fake.droplets.size, 0)
    assert.equal(fake.reservedIps.size, 0, 'no reserved IP left to be billed')
    assert.equal(fake.tags.has('iotcore:demo'), false)
  })

  test('a 429 waits until ratelimit-reset (or Retry-After when given), a 5xx backs off, then the request goes through', async () => {
    fake.throttleNext(2, 30)
    let r = await cloud(['list'])
    assert.equal(r.code, 0, r.err)
    assert.deepEqual(waits, [30_000, 30_000])
    assert.match(r.err, /GET \/v2\/droplets: 429 too_many_requests; retrying in 30 s/)

    waits = []
    fake.throttleNext(1, 600, 7)
    fake.failNext(2, 503)
    r = await cloud(['list'])
    assert.equal(r.code, 0, r.err)
    assert.deepEqual(waits, [7000, 2000, 4000])

    waits = []
    fake.failNext(20, 500)
    r = await cloud(['list'])
    assert.equal(r.code, 1)
    assert.match(r.err, /IOT_ERR_CLOUD_API: DigitalOcean answered GET \/v2\/droplets with 500 server_error/)
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000], 'five retries, then the error')
  })

  test('lists are read page by page through links.pages.next, within the rate limit', async () => {
    for (let i = 0; i < 450; i++) {
      fake.droplets.set(i + 1, {
        id: i + 1,
        name: `fleet-${i}`,
        status: 'active',
        created_at: new Date(clock).toISOString(),
        region: { slug: 'fra1', name: 'fra1' },
        size_slug: 's-1vcpu-1gb',
        image: { id: 1, slug: 'ubuntu-24-04-x64', name: 'ubuntu' },
        networks: { v4: [] },
        tags: ['iotcore'],
        user_data: '',
        polls: 0,
      })
    }
    // Three requests a minute: the eight this list needs (three pages twice, IPs, snapshots) span three windows.
    fake.limit = 3
    const r = await cloud(['list'])
    assert.equal(r.code, 0, r.err)
    assert.equal(r.out.split('\n').filter((l) => l.startsWith('fleet-')).length, 450)
    assert.ok(fake.log.some((l) => l.startsWith('GET /v2/droplets?') && l.includes('page=3')))
    assert.ok(waits.length >= 2, 'it waited for the window to reset')
    for (const w of waits) assert.ok(w > 0 && w <= 60_000, `waited until the reset: ${w}`)
  })

  test('a failed up deletes what it created: a refused reserved IP, and a droplet whose /readyz never answers', async () => {
    fake.reservedIpLimitReached = true
    let r = await up('demo')
    assert.equal(r.code, 1)
    assert.match(
      r.err,
      /IOT_ERR_CLOUD_API: DigitalOcean answered POST \/v2\/reserved_ips with 422 unprocessable_entity: You have reached/,
    )
    assert.match(r.err, /deleting what it created\ndeleted droplet \d+/)
    assert.equal(fake.droplets.size, 0)
    assert.equal(fake.tags.has('iotcore:demo'), false)

    fake.reservedIpLimitReached = false
    fake.reservedIpPool.push('127.0.0.1')
    r = await cloud(['up', 'demo', '--http-port', String(closedPort.port), '--wait', '120'])
    assert.equal(r.code, 1)
    assert.match(
      r.err,
      /IOT_ERR_CLOUD_NOT_READY: waiting for http:\/\/127\.0\.0\.1:\d+\/readyz .* did not happen within 120 s/,
    )
    assert.match(r.err, /deleted reserved IP 127\.0\.0\.1, droplet \d+/)
    assert.equal(fake.droplets.size, 0)
    assert.equal(fake.reservedIps.size, 0)

    fake.reservedIpPool.push('127.0.0.1')
    r = await cloud(['up', 'demo', '--http-port', String(closedPort.port), '--wait', '60', '--keep'])
    assert.equal(r.code, 1)
    assert.match(r.err, /--keep: droplet \d+ and reserved IP 127\.0\.0\.1 stay/)
    assert.equal(fake.droplets.size, 1, 'kept to be looked at')
  })

  test('--ttl: the first command after the time is up deletes the droplet, its reserved IP and its tags', async () => {
    const r = await up('short', '--ttl', '1h')
    assert.equal(r.code, 0, r.err)
    const expiry = [...fake.droplets.values()][0].tags.find((t) => t.startsWith('iotcore-expires:'))!
    assert.equal(Number(expiry.split(':')[1]), Math.ceil(Date.UTC(2026, 10, 29, 12, 0, 0) / 1000) + 3600)
    assert.match(r.out, /deleted by the first `iotcore cloud` command after 2026-11-29T13:00/)

    clock += 30 * 60_000
    let listed = await cloud(['list'])
    assert.match(listed.out, /^short\s/m, 'still there within its TTL')
    clock += 31 * 60_000
    listed = await cloud(['list'])
    assert.match(listed.err, /deleted short \(droplet \d+\): its --ttl ended at 2026-11-29T13:00/)
    assert.doesNotMatch(listed.out, /^short\s/m)
    assert.equal(fake.droplets.size, 0)
    assert.equal(fake.reservedIps.size, 0)
    assert.equal(fake.tags.has(expiry), false)
  })

  test('snapshot shuts down, snapshots and powers on; up --snapshot creates from it with a cloud-init that only restarts iotcore', async () => {
    assert.equal((await up('base')).code, 0)
    const s = await cloud(['snapshot', 'base', '--snapshot-name', 'iotcore-base-1'])
    assert.equal(s.code, 0, s.err)
    const [base] = fake.droplets.values()
    assert.deepEqual(
      [...fake.actions.values()]
        .filter((a) => a.resource_id === base.id && a.type !== 'create')
        .map((a) => [a.type, a.status]),
      [
        ['shutdown', 'completed'],
        ['snapshot', 'completed'],
        ['power_on', 'completed'],
      ],
    )
    assert.equal(base.status, 'active')
    const [snap] = fake.snapshots.values()
    assert.equal(snap.name, 'iotcore-base-1')
    assert.match(s.out, new RegExp(`snapshot iotcore-base-1 \\(id ${snap.id}\\)`))
    assert.match((await cloud(['list'])).out, /^iotcore-base-1\s/m)
    assert.equal((await cloud(['down', 'base'])).code, 0)

    const wrongRegion = await up('copy', '--snapshot', 'iotcore-base-1', '--region', 'nyc3')
    assert.equal(wrongRegion.code, 1)
    assert.match(wrongRegion.err, /snapshot iotcore-base-1 is in fra1, not in nyc3/)
    const r = await up('copy', '--snapshot', 'iotcore-base-1')
    assert.equal(r.code, 0, r.err)
    const [copy] = fake.droplets.values()
    assert.equal(copy.image.id, Number(snap.id))
    const ci = parse(copy.user_data)
    assert.deepEqual(ci.runcmd, ['systemctl restart iotcore'])
    assert.match(ci.write_files[0].content, /IOTCORE_ADMIN_TOKEN=/)
    assert.equal((await cloud(['down', 'copy'])).code, 0)
  })

  test('a token DigitalOcean refuses: exit 1 with its 401; no token at all: says how to get one', async () => {
    let r = await cloud(['list'], { DIGITALOCEAN_TOKEN: 'dop_v1_wrong' })
    assert.equal(r.code, 1)
    assert.match(
      r.err,
      /IOT_ERR_CLOUD_API: DigitalOcean answered GET \/v2\/droplets with 401 Unauthorized: Unable to authenticate you/,
    )
    r = await cloud(['list'], { DIGITALOCEAN_TOKEN: '' })
    assert.equal(r.code, 1)
    assert.match(r.err, /DIGITALOCEAN_TOKEN is unset/)
  })

  test('--dry-run prints the requests and the cloud-init and calls nobody; docs/deploy/digitalocean.md shows that output', async () => {
    const { stdout } = await run(
      process.execPath,
      [join(root, 'dist/src/cli/main.js'), 'cloud', 'up', 'demo', '--dry-run'],
      {
        env: { ...process.env, DIGITALOCEAN_TOKEN: '', DIGITALOCEAN_API_URL: '', IOTCORE_ADMIN_TOKEN: '' },
      },
    )
    assert.deepEqual(fake.log, [])
    assert.match(stdout, /^POST {3}https:\/\/api\.digitalocean\.com\/v2\/droplets$/m)
    assert.match(stdout, /IOTCORE_ADMIN_TOKEN=<generated>/)
    const ci = parse(stdout.slice(stdout.indexOf('#cloud-config')))
    assert.ok(ci.write_files.length === 2 && ci.runcmd.length > 0)
    const doc = readFileSync(join(root, 'docs/deploy/digitalocean.md'), 'utf8')
    const block = /```text\n\$ iotcore cloud up demo --dry-run\n([\s\S]*?)```/.exec(doc)?.[1]
    assert.equal(block, stdout, 'the docs show what the command prints')
  })
})
