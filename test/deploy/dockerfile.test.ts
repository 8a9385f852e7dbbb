import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { freePort } from '../../src/store/embedded.js'
import { ADMIN_TOKEN, LISTENERS_OFF, waitFor } from '../helpers/index.js'
import { build, parseDockerfile } from './dockerfile.js'
import { ShellProcess, root } from './processes.js'

const run = promisify(execFile)

/** A cache folder for npm under `dir` that reads and writes this machine's npm cache through a link. */
function sharedCache(dir: string): string {
  const real = join(process.env.npm_config_cache ?? join(homedir(), '.npm'), '_cacache')
  const cache = join(dir, 'npm-cache')
  mkdirSync(real, { recursive: true })
  mkdirSync(cache)
  symlinkSync(real, join(cache, '_cacache'))
  return cache
}
/** The image's user `node` stands for this uid here: any that is not root. */
const UID = 1000

describe('the Dockerfile, built and run without Docker (no Docker engine runs on this machine)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'iotcore-image-'))
  // The unprivileged user must reach the stage folders, as it reaches / in an image.
  chmodSync(dir, 0o755)
  let proc: ShellProcess | undefined
  after(async () => {
    await proc?.stop('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })

  test('two stages; the runtime one has production dependencies only, runs as a non-root user with embedded PostgreSQL in /data, and its HEALTHCHECK passes once /readyz answers', async () => {
    const df = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8'))
    assert.deepEqual(
      df.stages.map((s) => s.name),
      ['build', '1'],
    )
    const runtime = df.stages[1].steps
    const ops = runtime.map((s) => s.op)
    assert.ok(ops.indexOf('USER') < ops.indexOf('ENTRYPOINT'), 'the process starts as the unprivileged user')
    assert.notEqual(runtime.find((s) => s.op === 'USER')?.args, 'root')
    assert.match(runtime.find((s) => s.op === 'RUN')!.args, /npm ci --omit=dev/)

    const log: string[] = []
    const { final } = await build(
      join(root, 'Dockerfile'),
      root,
      dir,
      UID,
      // npm's cache setting, so the install takes what CI's own install already fetched. The image's
      // `npm cache clean --force` must not empty this machine's cache (another npm may be using it): the
      // steps get a cache folder of their own whose `_cacache` is a link to the real one, and a clean
      // removes the link, not what it points to.
      {
        npm_config_cache: sharedCache(dir),
        npm_config_prefer_offline: 'true',
        npm_config_update_notifier: 'false',
      },
      (l) => log.push(l),
    )
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    for (const dep of Object.keys(pkg.dependencies))
      assert.ok(existsSync(final.path(`node_modules/${dep}`)), `production dependency ${dep} installed`)
    for (const dep of Object.keys(pkg.devDependencies)) {
      // A dev dependency may be there as some production dependency's own dependency (yaml is); the
      // compiler, the linter and the test clients are not.
      if (['typescript', '@biomejs/biome', 'mqtt'].includes(dep))
        assert.equal(existsSync(final.path(`node_modules/${dep}`)), false, `dev dependency ${dep} left out`)
    }
    assert.equal(existsSync(final.path('dist/test')), false, 'only the compiled src is copied')
    assert.equal(existsSync(final.path('src')), false, 'no TypeScript source in the runtime stage')
    assert.equal(statSync(final.path('/data')).uid, UID, '/data belongs to the unprivileged user')

    // `docker run -p HTTP:8080 -p MQTT:1883 -e IOTCORE_ADMIN_TOKEN=... iotcore`: no DATABASE_URL, so the
    // embedded PostgreSQL runs in the /data volume, as the unprivileged user.
    const [http, mqtt] = [await freePort(), await freePort()]
    const env = {
      PATH: process.env.PATH,
      ...Object.fromEntries(
        Object.entries(final.env).map(([k, v]) => [k, v.startsWith('/') ? final.path(v) : v]),
      ),
      IOTCORE_HOST: '127.0.0.1',
      IOTCORE_HTTP_PORT: String(http),
      IOTCORE_MQTT_PORT: String(mqtt),
      ...LISTENERS_OFF,
      IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
      IOTCORE_LOG_LEVEL: 'warn',
    }
    const argv = [...final.entrypoint, ...final.cmd].map((a) => `'${a}'`).join(' ')
    proc = new ShellProcess('image', `exec ${argv}`, env, { cwd: final.path('.'), uid: UID, gid: UID })
    const health = async () => {
      try {
        await run(final.healthcheck![0], final.healthcheck!.slice(1), { env, uid: UID, gid: UID })
        return true
      } catch {
        return false
      }
    }
    assert.equal(await health(), false, 'the health check fails while nothing answers')
    await proc.until(health, 120_000, 'the HEALTHCHECK command to pass')
    const status = readFileSync(`/proc/${proc.child.pid}/status`, 'utf8')
    assert.match(status, new RegExp(`^Uid:\\s+${UID}\\s`, 'm'), 'the platform runs as the unprivileged user')
    assert.ok(existsSync(final.path('/data/pg/PG_VERSION')), 'PostgreSQL keeps its data in the volume')

    const base = `http://127.0.0.1:${http}/api/v1`
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }
    const dev = await (
      await fetch(`${base}/devices`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ name: 'boxed' }),
      })
    ).json()
    const sent = await fetch(`${base}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ts: 1_732_330_000_000, msgId: 'img-1', speed: 42 }),
    })
    assert.equal(sent.status, 202)
    await waitFor(async () => {
      const r = await (
        await fetch(`${base}/devices/${dev.id}/telemetry?keys=speed`, { headers: admin })
      ).json()
      return r.speed?.length === 1
    })
    // `docker stop` sends SIGTERM.
    assert.equal(await proc.stop(), 0, proc.out())
  })
})
