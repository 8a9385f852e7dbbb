import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * A local HTTP server that answers as DigitalOcean's API v2 is published to (the one stand-in the tests use:
 * that cloud is out of reach here): droplets, droplet actions, actions, reserved IPs and their actions,
 * snapshots and tags; Bearer authentication; `ratelimit-limit`/`-remaining`/`-reset` on every answer and 429
 * past the limit; errors as `{id, message, request_id}`; lists paged with `links.pages` and `meta.total`.
 * Droplets boot and actions complete after a number of polls; its state is open for the tests to read.
 */
export interface FakeDroplet {
  id: number
  name: string
  status: 'new' | 'active' | 'off'
  created_at: string
  region: { slug: string; name: string }
  size_slug: string
  image: { id: number; slug: string | null; name: string }
  networks: {
    v4: Array<{ ip_address: string; netmask: string; gateway: string; type: 'public' | 'private' }>
  }
  tags: string[]
  user_data: string
  polls: number
}

interface FakeAction {
  id: number
  status: 'in-progress' | 'completed' | 'errored'
  type: string
  started_at: string
  completed_at: string | null
  resource_id: number | null
  resource_type: string
  region_slug: string
  polls: number
  done: () => void
}

interface FakeSnapshot {
  id: string
  name: string
  created_at: string
  regions: string[]
  resource_id: string
  resource_type: 'droplet'
  min_disk_size: number
  size_gigabytes: number
  tags: string[]
}

export const REGIONS = ['fra1', 'ams3', 'nyc3', 'sfo3', 'sgp1', 'lon1']
export const SIZES = ['s-1vcpu-1gb', 's-1vcpu-2gb', 's-2vcpu-4gb']
export const IMAGES = ['ubuntu-24-04-x64', 'debian-12-x64']

export class FakeDigitalOcean {
  readonly token = 'dop_v1_test_0123456789abcdef'
  droplets = new Map<number, FakeDroplet>()
  reservedIps = new Map<string, { ip: string; region: { slug: string }; droplet_id: number | null }>()
  actions = new Map<number, FakeAction>()
  snapshots = new Map<string, FakeSnapshot>()
  tags = new Set<string>()
  /** Every request, as `METHOD /path?query`. */
  log: string[] = []
  /** Polls of GET /v2/droplets/:id before a new droplet is active, and of GET /v2/actions/:id before done. */
  bootPolls = 2
  actionPolls = 1
  /** The addresses handed out, in order: the tests point them at servers they run. */
  publicIps: string[] = []
  reservedIpPool: string[] = []
  /** Requests per window, as DigitalOcean's 250 per minute; `limit` lowers it. */
  limit = 250
  remaining = 250
  resetAt = 0
  /** The next n requests fail with this status (a 5xx), or with 429 when `throttle` is set. */
  private failures: Array<{
    status: number
    id: string
    message: string
    headers?: () => Record<string, string>
  }> = []
  /** Reserved IP creates refused with 422, as past an account's limit. */
  reservedIpLimitReached = false
  now = () => Date.now()
  private server: Server | undefined
  private nextId = 100_000_000
  base = ''

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => this.send(res, 500, { id: 'server_error', message: String(err) }))
    })
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r))
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this.base
  }

  stop(): Promise<void> {
    return new Promise((r) => (this.server ? this.server.close(() => r()) : r()))
  }

  failNext(n: number, status = 500): void {
    for (let i = 0; i < n; i++)
      this.failures.push({ status, id: 'server_error', message: 'Server was unable to give you a response.' })
  }

  /** The next n requests get 429 with the rate-limit headers DigitalOcean sends, resetting in `resetSeconds`. */
  throttleNext(n: number, resetSeconds: number, retryAfter?: number): void {
    for (let i = 0; i < n; i++)
      this.failures.push({
        status: 429,
        id: 'too_many_requests',
        message: 'API Rate limit exceeded.',
        // The reset is counted from when the 429 is sent, as the server's window would be.
        headers: () => ({
          'ratelimit-remaining': '0',
          'ratelimit-reset': String(Math.floor(this.now() / 1000) + resetSeconds),
          ...(retryAfter ? { 'retry-after': String(retryAfter) } : {}),
        }),
      })
  }

  private send(
    res: ServerResponse,
    status: number,
    body?: unknown,
    headers: Record<string, string> = {},
  ): void {
    const payload = body === undefined ? '' : JSON.stringify(body)
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'ratelimit-limit': String(this.limit),
      'ratelimit-remaining': String(Math.max(this.remaining, 0)),
      'ratelimit-reset': String(Math.floor(this.resetAt / 1000)),
      'x-request-id': `req-${this.log.length}`,
      ...headers,
    })
    res.end(payload)
  }

  private error(res: ServerResponse, status: number, id: string, message: string): void {
    this.send(res, status, { id, message, request_id: `req-${this.log.length}` })
  }

  private notFound(res: ServerResponse): void {
    this.error(res, 404, 'not_found', 'The resource you were accessing could not be found.')
  }

  /** A page of a list with DigitalOcean's `links.pages` (absolute URLs) and `meta.total`. */
  private page<T>(res: ServerResponse, url: URL, key: string, items: T[]): void {
    const perPage = Math.min(Number(url.searchParams.get('per_page') ?? 20), 200)
    const page = Math.max(Number(url.searchParams.get('page') ?? 1), 1)
    const last = Math.max(Math.ceil(items.length / perPage), 1)
    const at = (p: number) => {
      const u = new URL(url.toString(), this.base)
      u.searchParams.set('page', String(p))
      u.searchParams.set('per_page', String(perPage))
      return `${this.base}${u.pathname}${u.search}`
    }
    const pages: Record<string, string> = {}
    if (page > 1) Object.assign(pages, { first: at(1), prev: at(page - 1) })
    if (page < last) Object.assign(pages, { next: at(page + 1), last: at(last) })
    this.send(res, 200, {
      [key]: items.slice((page - 1) * perPage, page * perPage),
      links: { pages },
      meta: { total: items.length },
    })
  }

  private action(
    type: string,
    resourceType: string,
    resourceId: number | null,
    region: string,
    done: () => void,
  ) {
    const a: FakeAction = {
      id: this.nextId++,
      status: 'in-progress',
      type,
      started_at: new Date(this.now()).toISOString(),
      completed_at: null,
      resource_id: resourceId,
      resource_type: resourceType,
      region_slug: region,
      polls: 0,
      done,
    }
    this.actions.set(a.id, a)
    return a
  }

  private view(a: FakeAction) {
    const { polls, done, ...rest } = a
    return rest
  }

  private dropletView(d: FakeDroplet) {
    const { user_data, polls, ...rest } = d
    return rest
  }

  private async body(req: IncomingMessage): Promise<any> {
    let text = ''
    for await (const chunk of req) text += chunk
    return text ? JSON.parse(text) : {}
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.base)
    const method = req.method ?? 'GET'
    this.log.push(`${method} ${url.pathname}${url.search}`)
    if (req.headers.authorization !== `Bearer ${this.token}`)
      return this.error(res, 401, 'Unauthorized', 'Unable to authenticate you')
    if (this.now() >= this.resetAt) {
      this.remaining = this.limit
      this.resetAt = this.now() + 60_000
    }
    const fail = this.failures.shift()
    if (fail) {
      res.writeHead(fail.status, {
        'content-type': 'application/json; charset=utf-8',
        'ratelimit-limit': String(this.limit),
        'ratelimit-remaining': String(this.remaining),
        'ratelimit-reset': String(Math.floor(this.resetAt / 1000)),
        ...fail.headers?.(),
      })
      return void res.end(JSON.stringify({ id: fail.id, message: fail.message, request_id: 'req' }))
    }
    if (this.remaining <= 0) {
      return this.send(res, 429, { id: 'too_many_requests', message: 'API Rate limit exceeded.' })
    }
    this.remaining--
    const parts = url.pathname.split('/').filter(Boolean)
    if (parts[0] !== 'v2') return this.notFound(res)
    const [, kind, id, sub] = parts

    if (kind === 'droplets' && !id && method === 'POST') {
      const b = await this.body(req)
      for (const k of ['name', 'region', 'size', 'image'])
        if (b[k] === undefined || b[k] === '')
          return this.error(res, 422, 'unprocessable_entity', `${k} is required`)
      if (!REGIONS.includes(b.region))
        return this.error(res, 422, 'unprocessable_entity', 'Region is not available')
      if (!SIZES.includes(b.size))
        return this.error(res, 422, 'unprocessable_entity', 'Size is not available')
      let image: FakeDroplet['image']
      if (typeof b.image === 'number') {
        const s = this.snapshots.get(String(b.image))
        if (!s)
          return this.error(
            res,
            422,
            'unprocessable_entity',
            'You specified an invalid image for Droplet creation.',
          )
        if (!s.regions.includes(b.region))
          return this.error(
            res,
            422,
            'unprocessable_entity',
            'The image is not available in the selected region.',
          )
        image = { id: Number(s.id), slug: null, name: s.name }
      } else if (IMAGES.includes(b.image)) {
        image = { id: IMAGES.indexOf(b.image) + 1, slug: b.image, name: b.image }
      } else {
        return this.error(
          res,
          422,
          'unprocessable_entity',
          'You specified an invalid image for Droplet creation.',
        )
      }
      if (typeof b.user_data === 'string' && b.user_data.length > 64 * 1024)
        return this.error(res, 422, 'unprocessable_entity', 'user_data is limited to 64 KiB')
      for (const t of b.tags ?? []) {
        if (!/^[A-Za-z0-9:_-]{1,255}$/.test(t))
          return this.error(res, 422, 'unprocessable_entity', `invalid tag ${t}`)
        this.tags.add(t)
      }
      const d: FakeDroplet = {
        id: this.nextId++,
        name: b.name,
        status: 'new',
        created_at: new Date(this.now()).toISOString(),
        region: { slug: b.region, name: b.region },
        size_slug: b.size,
        image,
        networks: { v4: [] },
        tags: b.tags ?? [],
        user_data: b.user_data ?? '',
        polls: 0,
      }
      this.droplets.set(d.id, d)
      const a = this.action('create', 'droplet', d.id, b.region, () => {})
      a.status = 'completed'
      return this.send(res, 202, {
        droplet: this.dropletView(d),
        links: { actions: [{ id: a.id, rel: 'create', href: `${this.base}/v2/actions/${a.id}` }] },
      })
    }
    if (kind === 'droplets' && !id && method === 'GET') {
      const tag = url.searchParams.get('tag_name')
      const list = [...this.droplets.values()].filter((d) => !tag || d.tags.includes(tag))
      return this.page(
        res,
        url,
        'droplets',
        list.map((d) => this.dropletView(d)),
      )
    }
    if (kind === 'droplets' && !id && method === 'DELETE') {
      const tag = url.searchParams.get('tag_name')
      if (!tag) return this.error(res, 422, 'unprocessable_entity', 'tag_name is required')
      for (const d of [...this.droplets.values()]) if (d.tags.includes(tag)) this.deleteDroplet(d.id)
      return this.send(res, 204)
    }
    if (kind === 'droplets' && id) {
      const d = this.droplets.get(Number(id))
      if (!d) return this.notFound(res)
      if (!sub && method === 'GET') {
        if (d.status === 'new' && ++d.polls >= this.bootPolls) {
          d.status = 'active'
          const ip = this.publicIps.shift() ?? `203.0.113.${(d.id % 250) + 1}`
          d.networks.v4.push({
            ip_address: ip,
            netmask: '255.255.240.0',
            gateway: '203.0.113.1',
            type: 'public',
          })
        }
        return this.send(res, 200, { droplet: this.dropletView(d) })
      }
      if (!sub && method === 'DELETE') {
        this.deleteDroplet(d.id)
        return this.send(res, 204)
      }
      if (sub === 'actions' && method === 'POST') {
        const b = await this.body(req)
        if (d.status === 'new')
          return this.error(res, 422, 'unprocessable_entity', 'Droplet already has a pending event.')
        let done = () => {}
        if (b.type === 'shutdown' || b.type === 'power_off') done = () => (d.status = 'off')
        else if (b.type === 'power_on') done = () => (d.status = 'active')
        else if (b.type === 'snapshot') {
          if (!b.name) return this.error(res, 422, 'unprocessable_entity', 'name is required')
          done = () => {
            const s: FakeSnapshot = {
              id: String(this.nextId++),
              name: b.name,
              created_at: new Date(this.now()).toISOString(),
              regions: [d.region.slug],
              resource_id: String(d.id),
              resource_type: 'droplet',
              min_disk_size: 50,
              size_gigabytes: 2.36,
              tags: [],
            }
            this.snapshots.set(s.id, s)
          }
        } else return this.error(res, 422, 'unprocessable_entity', `unknown action type ${b.type}`)
        return this.send(res, 201, {
          action: this.view(this.action(b.type, 'droplet', d.id, d.region.slug, done)),
        })
      }
    }
    if (kind === 'actions' && id && method === 'GET') {
      const a = this.actions.get(Number(id))
      if (!a) return this.notFound(res)
      if (a.status === 'in-progress' && ++a.polls >= this.actionPolls) {
        a.status = 'completed'
        a.completed_at = new Date(this.now()).toISOString()
        a.done()
      }
      return this.send(res, 200, { action: this.view(a) })
    }
    if (kind === 'reserved_ips' && !id && method === 'POST') {
      const b = await this.body(req)
      if (this.reservedIpLimitReached)
        return this.error(
          res,
          422,
          'unprocessable_entity',
          'You have reached the maximum number of reserved IPs.',
        )
      const d = b.droplet_id !== undefined ? this.droplets.get(Number(b.droplet_id)) : undefined
      if (b.droplet_id !== undefined && !d)
        return this.error(res, 422, 'unprocessable_entity', 'Droplet not found')
      if (d && d.status === 'new')
        return this.error(res, 422, 'unprocessable_entity', 'Droplet already has a pending event.')
      const ip = this.reservedIpPool.shift() ?? `198.51.100.${this.reservedIps.size + 1}`
      const region = d?.region.slug ?? b.region
      this.reservedIps.set(ip, { ip, region: { slug: region }, droplet_id: null })
      const links: Record<string, unknown> = {}
      if (d) {
        const a = this.action(
          'assign_ip',
          'reserved_ip',
          null,
          region,
          () => (this.reservedIps.get(ip)!.droplet_id = d.id),
        )
        links.droplets = [{ id: d.id, rel: 'droplet', href: `${this.base}/v2/droplets/${d.id}` }]
        links.actions = [{ id: a.id, rel: 'assign_ip', href: `${this.base}/v2/actions/${a.id}` }]
      }
      return this.send(res, 202, { reserved_ip: this.ipView(ip), links })
    }
    if (kind === 'reserved_ips' && !id && method === 'GET')
      return this.page(
        res,
        url,
        'reserved_ips',
        [...this.reservedIps.keys()].map((ip) => this.ipView(ip)),
      )
    if (kind === 'reserved_ips' && id) {
      if (!this.reservedIps.has(id)) return this.notFound(res)
      if (!sub && method === 'GET') return this.send(res, 200, { reserved_ip: this.ipView(id) })
      if (!sub && method === 'DELETE') {
        this.reservedIps.delete(id)
        return this.send(res, 204)
      }
    }
    if (kind === 'snapshots' && !id && method === 'GET') {
      const type = url.searchParams.get('resource_type')
      return this.page(
        res,
        url,
        'snapshots',
        [...this.snapshots.values()].filter((s) => !type || s.resource_type === type),
      )
    }
    if (kind === 'snapshots' && id) {
      const s = this.snapshots.get(id)
      if (!s) return this.notFound(res)
      if (method === 'GET') return this.send(res, 200, { snapshot: s })
      if (method === 'DELETE') {
        this.snapshots.delete(id)
        return this.send(res, 204)
      }
    }
    if (kind === 'tags' && !id && method === 'POST') {
      const b = await this.body(req)
      this.tags.add(b.name)
      return this.send(res, 201, { tag: this.tagView(b.name) })
    }
    if (kind === 'tags' && id) {
      const name = decodeURIComponent(id)
      if (!this.tags.has(name)) return this.notFound(res)
      if (method === 'GET') return this.send(res, 200, { tag: this.tagView(name) })
      if (method === 'DELETE') {
        this.tags.delete(name)
        for (const d of this.droplets.values()) d.tags = d.tags.filter((t) => t !== name)
        return this.send(res, 204)
      }
    }
    return this.notFound(res)
  }

  private deleteDroplet(id: number): void {
    this.droplets.delete(id)
    // A reserved IP outlives its droplet, unassigned (and billed): deleting it is the caller's job.
    for (const r of this.reservedIps.values()) if (r.droplet_id === id) r.droplet_id = null
  }

  private ipView(ip: string) {
    const r = this.reservedIps.get(ip)!
    const d = r.droplet_id === null ? null : this.droplets.get(r.droplet_id)
    return { ip, region: r.region, droplet: d ? this.dropletView(d) : null, locked: false }
  }

  private tagView(name: string) {
    const count = [...this.droplets.values()].filter((d) => d.tags.includes(name)).length
    return { name, resources: { count, droplets: { count } } }
  }
}
