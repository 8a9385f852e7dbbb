import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { type ClientConfig, loadClientConfig } from '../config/index.js'
import { IotError } from '../errors.js'
import { cloudInit } from './cloud-init.js'
import { DigitalOcean, DigitalOceanError, type Droplet } from './digitalocean.js'

export const CLOUD_USAGE = `iotcore cloud: a DigitalOcean droplet running iotcore (DIGITALOCEAN_TOKEN)

  iotcore cloud up [NAME] [--region fra1] [--size s-1vcpu-2gb] [--image ubuntu-24-04-x64 | --snapshot NAME|ID]
                   [--ssh-key ID|FINGERPRINT ...] [--ttl 2h] [--wait 900] [--keep] [--dry-run]
      creates the droplet (cloud-init installs Node.js and iotcore as a systemd service), attaches a reserved
      IP, waits until /readyz answers, prints the URLs and the admin token. --ttl: deleted by the first
      \`iotcore cloud\` command run after it ends (30m, 2h, 7d). A failed up deletes what it created, unless
      --keep (then a droplet that never got ready stays, to be looked at)
  iotcore cloud down NAME [--dry-run]     deletes the droplet, its reserved IP and its tags
  iotcore cloud list                      droplets and snapshots made by iotcore
  iotcore cloud snapshot NAME [--snapshot-name S] [--live] [--dry-run]
      shuts the droplet down (unless --live), snapshots it, powers it on; \`up --snapshot S\` starts from it`

/** Every droplet iotcore makes carries this tag; its own name tag, and an expiry tag with --ttl. */
export const TAG = 'iotcore'
const EXPIRES = 'iotcore-expires:'

export interface CloudIo {
  out(line: string): void
  /** Progress and notices, on stderr. */
  err(text: string): void
  isTTY: boolean
  env: Record<string, string | undefined>
  now?: () => number
  /** Between polls of a droplet, an action or /readyz. */
  pollMs?: number
  sleep?: (ms: number) => Promise<void>
}

const DEFAULTS = {
  name: 'iotcore',
  region: 'fra1',
  size: 's-1vcpu-2gb',
  image: 'ubuntu-24-04-x64',
  waitSeconds: 900,
  nodeMajor: 22,
  httpPort: 8080,
  mqttPort: 1883,
}

function usage(message: string): never {
  throw new UsageError(message)
}

export class UsageError extends Error {}

/** `30m`, `2h`, `7d` in seconds. */
export function parseTtl(raw: string): number {
  const m = /^(\d+)([mhd])$/.exec(raw.trim())
  if (!m || Number(m[1]) === 0) usage(`--ttl ${raw}: expected a duration such as 30m, 2h or 7d`)
  return Number(m[1]) * { m: 60, h: 3600, d: 86400 }[m[2] as 'm' | 'h' | 'd']
}

function nameTag(name: string): string {
  return `${TAG}:${name.replace(/[^A-Za-z0-9_-]/g, '_')}`
}

function expiresAt(d: Droplet): number | undefined {
  const t = d.tags.find((x) => x.startsWith(EXPIRES))
  return t ? Number(t.slice(EXPIRES.length)) * 1000 : undefined
}

function publicIp(d: Droplet): string | undefined {
  return d.networks.v4.find((n) => n.type === 'public')?.ip_address
}

function packageVersion(): string {
  return JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')).version
}

/** A line that says what is being waited for, rewritten in place on a terminal, printed once per change elsewhere. */
class Progress {
  private last = ''
  private readonly t0: number
  constructor(
    private readonly io: CloudIo,
    private readonly now: () => number,
  ) {
    this.t0 = now()
  }
  show(what: string): void {
    const line = `${what} (${Math.round((this.now() - this.t0) / 1000)} s)`
    if (this.io.isTTY) this.io.err(`\r\x1b[2K${line}`)
    else if (what !== this.last) this.io.err(`${line}\n`)
    this.last = what
  }
  done(): void {
    if (this.io.isTTY && this.last) this.io.err('\n')
    this.last = ''
  }
}

class Cloud {
  readonly now: () => number
  readonly pollMs: number
  readonly sleep: (ms: number) => Promise<void>
  private client: DigitalOcean | undefined

  constructor(
    readonly io: CloudIo,
    readonly config: ClientConfig,
  ) {
    this.now = io.now ?? Date.now
    this.pollMs = io.pollMs ?? 3000
    this.sleep = io.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)))
  }

  get do(): DigitalOcean {
    if (!this.client) {
      if (!this.config.digitalOceanToken)
        throw new IotError(
          'IOT_ERR_CONFIG_INVALID',
          'DIGITALOCEAN_TOKEN is unset: create a token (read and write) in the control panel, API, Tokens',
        )
      this.client = new DigitalOcean({
        token: this.config.digitalOceanToken,
        baseUrl: this.config.digitalOceanApiUrl,
        sleep: this.sleep,
        now: this.now,
        events: {
          retry: (ms, why) => this.io.err(`${why}; retrying in ${Math.ceil(ms / 1000)} s\n`),
        },
      })
    }
    return this.client
  }

  /** Polls `check` until it returns a value, showing `what`; past the deadline, a coded error. */
  async until<T>(
    what: string,
    deadline: number,
    waitSeconds: number,
    check: () => Promise<T | undefined>,
  ): Promise<T> {
    const progress = new Progress(this.io, this.now)
    for (;;) {
      const v = await check()
      if (v !== undefined) {
        progress.done()
        return v
      }
      if (this.now() >= deadline) {
        progress.done()
        throw new IotError('IOT_ERR_CLOUD_NOT_READY', [what, waitSeconds])
      }
      progress.show(what)
      await this.sleep(this.pollMs)
    }
  }

  async waitAction(
    id: number | undefined,
    what: string,
    deadline: number,
    waitSeconds: number,
  ): Promise<void> {
    if (id === undefined) return
    await this.until(what, deadline, waitSeconds, async () => {
      const a = await this.do.action(id)
      if (a.status === 'errored')
        throw new IotError('IOT_ERR_CLOUD_API', ['GET', `/v2/actions/${id}`, 'errored', what])
      return a.status === 'completed' ? true : undefined
    })
  }

  /** The TTL check every command makes first: droplets whose expiry tag has passed are deleted whole. */
  async reap(): Promise<void> {
    for (const d of await this.do.droplets(TAG)) {
      const at = expiresAt(d)
      if (at !== undefined && at <= this.now()) {
        await this.deleteWhole(d.name, [d])
        this.io.err(`deleted ${d.name} (droplet ${d.id}): its --ttl ended at ${new Date(at).toISOString()}\n`)
      }
    }
  }

  /**
   * Deletes the droplets of a name (by its tag: a double made by a retried create goes too), the reserved IPs
   * assigned to them or named in `ips`, and their tags; what is gone already is no error. Says what it deleted.
   */
  async deleteWhole(name: string, droplets: Droplet[], ips: string[] = []): Promise<string[]> {
    const ids = new Set(droplets.map((d) => d.id))
    const doomed = new Set(ips)
    for (const ip of await this.do.reservedIps()) if (ip.droplet && ids.has(ip.droplet.id)) doomed.add(ip.ip)
    const done: string[] = []
    for (const ip of doomed) {
      await this.gone(this.do.deleteReservedIp(ip))
      done.push(`reserved IP ${ip}`)
    }
    await this.gone(this.do.deleteDropletsByTag(nameTag(name)))
    done.push(...droplets.map((d) => `droplet ${d.id}`))
    const tags = new Set([
      nameTag(name),
      ...droplets.flatMap((d) => d.tags.filter((t) => t.startsWith(EXPIRES))),
    ])
    for (const t of tags) await this.gone(this.do.deleteTag(t))
    return done
  }

  private async gone(p: Promise<void>): Promise<void> {
    try {
      await p
    } catch (err) {
      if (!(err instanceof DigitalOceanError && err.status === 404)) throw err
    }
  }

  async byName(name: string): Promise<Droplet[]> {
    return (await this.do.droplets(TAG)).filter((d) => d.name === name)
  }
}

interface UpOptions {
  name: string
  region: string
  size: string
  image: string
  snapshot?: string
  sshKeys: string[]
  ttlSeconds?: number
  waitSeconds: number
  keep: boolean
  packageSpec: string
  httpPort: number
  mqttPort: number
}

async function up(c: Cloud, o: UpOptions, dryRun: boolean): Promise<void> {
  const tags = [TAG, nameTag(o.name)]
  const expires = o.ttlSeconds ? Math.ceil(c.now() / 1000) + o.ttlSeconds : undefined
  if (expires) tags.push(`${EXPIRES}${expires}`)
  const adminToken =
    c.io.env.IOTCORE_ADMIN_TOKEN || (dryRun ? '<generated>' : `adm_${randomBytes(24).toString('base64url')}`)
  const userData = cloudInit({
    adminToken,
    httpPort: o.httpPort,
    mqttPort: o.mqttPort,
    packageSpec: o.packageSpec,
    nodeMajor: DEFAULTS.nodeMajor,
    install: !o.snapshot,
  })
  const create = (image: string | number) => ({
    name: o.name,
    region: o.region,
    size: o.size,
    image,
    user_data: userData,
    tags,
    ...(o.sshKeys.length ? { ssh_keys: o.sshKeys.map((k) => (/^\d+$/.test(k) ? Number(k) : k)) } : {}),
    monitoring: true,
  })
  const api = c.config.digitalOceanApiUrl
  if (dryRun) {
    const { user_data, ...body } = create(o.snapshot ? '<snapshot id>' : o.image)
    const lines = [
      `GET    ${api}/v2/droplets?tag_name=${TAG}&per_page=200   (deletes droplets past their --ttl; the name must be free)`,
      ...(o.snapshot
        ? [`GET    ${api}/v2/snapshots?resource_type=droplet&per_page=200   (finds ${o.snapshot})`]
        : []),
      `POST   ${api}/v2/droplets`,
      JSON.stringify({ ...body, user_data: '<the cloud-init below>' }, null, 2),
      `GET    ${api}/v2/droplets/<id>   (until its status is active)`,
      `POST   ${api}/v2/reserved_ips`,
      JSON.stringify({ droplet_id: '<id>' }),
      `GET    ${api}/v2/actions/<assign action id>   (until completed)`,
      `GET    http://<reserved ip>:${o.httpPort}/readyz   (until 200: cloud-init installs Node.js and iotcore)`,
      '',
      '--- cloud-init user data ---',
      user_data,
    ]
    for (const l of lines) c.io.out(l)
    return
  }

  await c.reap()
  if ((await c.byName(o.name)).length)
    usage(`a droplet named ${o.name} exists: \`iotcore cloud down ${o.name}\` first`)
  let image: string | number = o.image
  if (o.snapshot) {
    const s = (await c.do.snapshots()).find((x) => x.name === o.snapshot || x.id === o.snapshot)
    if (!s) usage(`no droplet snapshot named or numbered ${o.snapshot}; \`iotcore cloud list\` shows them`)
    if (!s.regions.includes(o.region))
      usage(`snapshot ${s.name} is in ${s.regions.join(', ')}, not in ${o.region}: pass --region`)
    image = Number(s.id)
  }
  const deadline = c.now() + o.waitSeconds * 1000
  let droplet: Droplet | undefined
  let reserved: string | undefined
  let readyzStarted = false
  try {
    droplet = (await c.do.createDroplet(create(image))).droplet
    c.io.err(`created droplet ${droplet.id} (${o.name}, ${o.region}, ${o.size})\n`)
    const id = droplet.id
    droplet = await c.until(`droplet ${id} booting`, deadline, o.waitSeconds, async () => {
      const d = await c.do.droplet(id)
      return d.status === 'active' ? d : undefined
    })
    const r = await c.do.createReservedIp(id)
    reserved = r.ip.ip
    await c.waitAction(r.action, `reserved IP ${reserved} being assigned`, deadline, o.waitSeconds)
    c.io.err(`reserved IP ${reserved} assigned\n`)
    readyzStarted = true
    const base = `http://${reserved}:${o.httpPort}`
    await c.until(
      `waiting for ${base}/readyz (cloud-init installs Node.js and iotcore)`,
      deadline,
      o.waitSeconds,
      async () => {
        try {
          const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5000) })
          return res.ok ? true : undefined
        } catch {
          return undefined
        }
      },
    )
    const lines = [
      `iotcore is running on droplet ${id} (${o.name})`,
      `  REST API   ${base}/api/v1   (docs: ${base}/docs)`,
      `  MQTT       mqtt://${reserved}:${o.mqttPort}   (WebSocket: ws://${reserved}:${o.httpPort}/mqtt)`,
      `  health     ${base}/readyz`,
      `  admin token: ${adminToken}`,
      `  ssh        root@${reserved}${o.sshKeys.length ? '' : ' (no --ssh-key given: DigitalOcean mailed a root password)'}`,
    ]
    if (expires)
      lines.push(
        `  deleted by the first \`iotcore cloud\` command after ${new Date(expires * 1000).toISOString()}`,
      )
    for (const l of lines) c.io.out(l)
  } catch (err) {
    if (o.keep && readyzStarted) {
      c.io.err(
        `--keep: droplet ${droplet?.id} and reserved IP ${reserved} stay; \`iotcore cloud down ${o.name}\` deletes them\n`,
      )
      throw err
    }
    c.io.err(`up failed: ${(err as Error).message}\ndeleting what it created\n`)
    try {
      const left = droplet ? [droplet] : await c.byName(o.name)
      const done = await c.deleteWhole(o.name, left, reserved ? [reserved] : [])
      c.io.err(`deleted ${done.join(', ')}\n`)
    } catch (cleanup) {
      c.io.err(
        `could not delete it all (${(cleanup as Error).message}): \`iotcore cloud down ${o.name}\` retries\n`,
      )
    }
    throw err
  }
}

async function down(c: Cloud, name: string, dryRun: boolean): Promise<void> {
  const api = c.config.digitalOceanApiUrl
  if (dryRun) {
    for (const l of [
      `GET    ${api}/v2/droplets?tag_name=${TAG}&per_page=200   (finds ${name})`,
      `GET    ${api}/v2/reserved_ips?per_page=200   (finds the ones assigned to it)`,
      `DELETE ${api}/v2/reserved_ips/<ip>`,
      `DELETE ${api}/v2/droplets?tag_name=${nameTag(name)}`,
      `DELETE ${api}/v2/tags/${nameTag(name)}`,
    ])
      c.io.out(l)
    return
  }
  await c.reap()
  const droplets = await c.byName(name)
  if (!droplets.length) usage(`no droplet named ${name} made by iotcore; \`iotcore cloud list\` shows them`)
  c.io.out(`deleted ${(await c.deleteWhole(name, droplets)).join(', ')}`)
}

async function list(c: Cloud): Promise<void> {
  await c.reap()
  const droplets = await c.do.droplets(TAG)
  const ips = await c.do.reservedIps()
  const rows = [['NAME', 'ID', 'STATUS', 'REGION', 'SIZE', 'RESERVED IP', 'PUBLIC IP', 'EXPIRES']]
  for (const d of droplets) {
    const at = expiresAt(d)
    rows.push([
      d.name,
      String(d.id),
      d.status,
      d.region.slug,
      d.size_slug,
      ips.find((i) => i.droplet?.id === d.id)?.ip ?? '-',
      publicIp(d) ?? '-',
      at ? new Date(at).toISOString() : '-',
    ])
  }
  const snaps = (await c.do.snapshots()).filter((s) => s.name.startsWith(TAG))
  const table = (r: string[][]) => {
    const w = r[0].map((_, i) => Math.max(...r.map((x) => x[i].length)))
    for (const x of r)
      c.io.out(
        x
          .map((v, i) => v.padEnd(w[i]))
          .join('  ')
          .trimEnd(),
      )
  }
  table(rows)
  if (snaps.length) {
    c.io.out('')
    table([
      ['SNAPSHOT', 'ID', 'CREATED', 'REGIONS', 'GB'],
      ...snaps.map((s) => [s.name, s.id, s.created_at, s.regions.join(','), String(s.size_gigabytes)]),
    ])
  }
}

async function snapshot(
  c: Cloud,
  name: string,
  o: { snapshotName?: string; live: boolean; waitSeconds: number },
  dryRun: boolean,
): Promise<void> {
  const stamp = new Date(c.now()).toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', '-')
  const snapName = o.snapshotName ?? `${TAG}-${name}-${stamp}`
  const api = c.config.digitalOceanApiUrl
  const steps = [...(o.live ? [] : ['shutdown']), 'snapshot', ...(o.live ? [] : ['power_on'])]
  if (dryRun) {
    c.io.out(`GET    ${api}/v2/droplets?tag_name=${TAG}&per_page=200   (finds ${name})`)
    for (const type of steps) {
      c.io.out(`POST   ${api}/v2/droplets/<id>/actions`)
      c.io.out(JSON.stringify(type === 'snapshot' ? { type, name: snapName } : { type }))
      c.io.out(`GET    ${api}/v2/actions/<action id>   (until completed)`)
    }
    return
  }
  await c.reap()
  const [d] = await c.byName(name)
  if (!d) usage(`no droplet named ${name} made by iotcore; \`iotcore cloud list\` shows them`)
  const deadline = c.now() + o.waitSeconds * 1000
  for (const type of steps) {
    const a = await c.do.dropletAction(d.id, type === 'snapshot' ? { type, name: snapName } : { type })
    // A snapshot of a running droplet is crash-consistent (PostgreSQL and the queue recover as after a power
    // cut); a shut-down one is clean, hence the default.
    await c.waitAction(a.id, `${type.replace('_', ' ')} of droplet ${d.id}`, deadline, o.waitSeconds)
  }
  const s = (await c.do.snapshots()).find((x) => x.name === snapName)
  c.io.out(
    `snapshot ${snapName} (id ${s?.id ?? 'not listed yet'}): \`iotcore cloud up NEWNAME --snapshot ${snapName}\``,
  )
}

/** `iotcore cloud ...`: the exit code; errors a user can fix are printed, not thrown. */
export async function runCloud(argv: string[], io: CloudIo): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>
  let positionals: string[]
  try {
    ;({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        region: { type: 'string' },
        size: { type: 'string' },
        image: { type: 'string' },
        snapshot: { type: 'string' },
        'ssh-key': { type: 'string', multiple: true },
        ttl: { type: 'string' },
        wait: { type: 'string' },
        keep: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        'snapshot-name': { type: 'string' },
        live: { type: 'boolean' },
        package: { type: 'string' },
        'http-port': { type: 'string' },
        'mqtt-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${CLOUD_USAGE}\n`)
    return 1
  }
  const [cmd, name] = positionals
  if (values.help || !cmd) {
    io.out(CLOUD_USAGE)
    return values.help ? 0 : 1
  }
  const dryRun = values['dry-run'] === true
  const int = (flag: string, def: number) => {
    const raw = values[flag] as string | undefined
    if (raw === undefined) return def
    if (!/^\d+$/.test(raw)) usage(`--${flag} ${raw}: expected a number`)
    return Number(raw)
  }
  try {
    const c = new Cloud(io, loadClientConfig(io.env))
    if (cmd === 'up') {
      await up(
        c,
        {
          name: name ?? DEFAULTS.name,
          region: (values.region as string) ?? DEFAULTS.region,
          size: (values.size as string) ?? DEFAULTS.size,
          image: (values.image as string) ?? DEFAULTS.image,
          snapshot: values.snapshot as string | undefined,
          sshKeys: (values['ssh-key'] as string[] | undefined) ?? [],
          ttlSeconds: values.ttl ? parseTtl(values.ttl as string) : undefined,
          waitSeconds: int('wait', DEFAULTS.waitSeconds),
          keep: values.keep === true,
          packageSpec: (values.package as string) ?? `iotcore@${packageVersion()}`,
          httpPort: int('http-port', DEFAULTS.httpPort),
          mqttPort: int('mqtt-port', DEFAULTS.mqttPort),
        },
        dryRun,
      )
    } else if (cmd === 'down') {
      if (!name) usage('usage: iotcore cloud down NAME')
      await down(c, name, dryRun)
    } else if (cmd === 'list') {
      await list(c)
    } else if (cmd === 'snapshot') {
      if (!name) usage('usage: iotcore cloud snapshot NAME [--snapshot-name S]')
      await snapshot(
        c,
        name,
        {
          snapshotName: values['snapshot-name'] as string | undefined,
          live: values.live === true,
          waitSeconds: int('wait', DEFAULTS.waitSeconds),
        },
        dryRun,
      )
    } else {
      usage(`unknown command: cloud ${cmd}\n\n${CLOUD_USAGE}`)
    }
    return 0
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n`)
      return 1
    }
    if (err instanceof IotError) {
      io.err(`${err.code}: ${err.message}\n`)
      return 1
    }
    throw err
  }
}
