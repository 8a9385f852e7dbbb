import { IotError } from '../errors.js'

/**
 * A small typed client for the part of DigitalOcean's API v2 that `iotcore cloud` uses (droplets, droplet
 * actions, reserved IPs, snapshots, tags), over fetch. Why not a client package: `dots-wrapper` is kept up but
 * brings axios for what fetch does, and neither it nor DigitalOcean's generated `@digitalocean/dots` retries a
 * rate limit by its `ratelimit-reset`; the few calls here are easier to read than a dependency is to audit.
 * Shapes follow DigitalOcean's published API v2 reference; only the fields iotcore reads are typed.
 */

export interface Network {
  ip_address: string
  type: 'public' | 'private'
}

export interface Droplet {
  id: number
  name: string
  status: 'new' | 'active' | 'off' | 'archive'
  created_at: string
  region: { slug: string }
  size_slug: string
  image: { id: number; slug: string | null; name: string }
  networks: { v4: Network[]; v6?: Network[] }
  tags: string[]
}

export interface ReservedIp {
  ip: string
  region: { slug: string }
  droplet: Droplet | null
}

export interface Action {
  id: number
  status: 'in-progress' | 'completed' | 'errored'
  type: string
  resource_id: number | null
  resource_type: string
}

export interface Snapshot {
  id: string
  name: string
  created_at: string
  regions: string[]
  resource_id: string
  resource_type: 'droplet' | 'volume'
  size_gigabytes: number
  min_disk_size: number
}

export interface DropletCreate {
  name: string
  region: string
  size: string
  /** A public image's slug, or a snapshot's (numeric) id. */
  image: string | number
  user_data: string
  tags: string[]
  ssh_keys?: Array<string | number>
  monitoring?: boolean
}

/** An action as a create or action request links it: `{id, rel, href}`. */
interface ActionLink {
  id: number
  rel: string
  href: string
}

/** How the client says what it does: each request, and each wait before a retry. */
export interface ClientEvents {
  request?(method: string, url: string): void
  retry?(waitMs: number, why: string): void
}

export interface ClientOptions {
  token: string
  baseUrl: string
  /** Retries of one request after a 429 or a 5xx; then its error is thrown. */
  maxRetries?: number
  events?: ClientEvents
  /** Waits before a retry; a test may record the waits instead of sleeping through them. */
  sleep?: (ms: number) => Promise<void>
  now?: () => number
}

/** Longest wait for one retry: a `ratelimit-reset` an hour away is not worth holding a terminal for. */
const MAX_WAIT_MS = 5 * 60_000
const PER_PAGE = 200

const sleepMs = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** An API error, with DigitalOcean's status and error id (`not_found`, `unprocessable_entity`, ...). */
export class DigitalOceanError extends IotError {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly id: string,
    message: string,
  ) {
    super('IOT_ERR_CLOUD_API', [method, path, `${status} ${id}`, message])
  }
}

export class DigitalOcean {
  private readonly maxRetries: number
  private readonly sleep: (ms: number) => Promise<void>
  private readonly now: () => number

  constructor(private readonly opts: ClientOptions) {
    this.maxRetries = opts.maxRetries ?? 5
    this.sleep = opts.sleep ?? sleepMs
    this.now = opts.now ?? Date.now
  }

  /**
   * One request, retried on 429 and 5xx (a create retried after a 5xx may have been done once already: the
   * callers tag what they create, so a cleanup by tag finds a double). A 429 waits for `Retry-After` if given,
   * else until `ratelimit-reset` (the Unix time the oldest counted request expires); a 5xx backs off 1, 2, 4 s...
   */
  async request<T>(method: string, pathOrUrl: string, body?: unknown): Promise<T> {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${this.opts.baseUrl}${pathOrUrl}`
    const path = new URL(url).pathname
    for (let attempt = 0; ; attempt++) {
      this.opts.events?.request?.(method, url)
      let res: Response
      try {
        res = await fetch(url, {
          method,
          headers: {
            authorization: `Bearer ${this.opts.token}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        })
      } catch (err) {
        if (attempt >= this.maxRetries)
          throw new DigitalOceanError(method, path, 0, 'unreachable', String(err))
        await this.wait(this.backoff(attempt), `${method} ${path}: ${(err as Error).message}`)
        continue
      }
      if (res.ok) {
        const text = await res.text()
        return (text ? JSON.parse(text) : undefined) as T
      }
      const text = await res.text()
      let id = 'error'
      let message = text.slice(0, 300)
      try {
        const e = JSON.parse(text) as { id?: string; message?: string }
        id = e.id ?? id
        message = e.message ?? message
      } catch {}
      const retryable = res.status === 429 || res.status >= 500
      if (!retryable || attempt >= this.maxRetries)
        throw new DigitalOceanError(method, path, res.status, id, message)
      const ms = res.status === 429 ? this.rateLimitWait(res.headers) : this.backoff(attempt)
      await this.wait(ms, `${method} ${path}: ${res.status} ${id}`)
    }
  }

  /** Every item of a list, page by page through `links.pages.next` (on this API's origin only). */
  async list<T>(path: string, key: string): Promise<T[]> {
    const out: T[] = []
    const first = new URL(`${this.opts.baseUrl}${path}`)
    first.searchParams.set('per_page', String(PER_PAGE))
    let next: string | undefined = first.toString()
    while (next) {
      const page: Record<string, unknown> & { links?: { pages?: { next?: string } } } = await this.request(
        'GET',
        next,
      )
      out.push(...((page[key] as T[] | undefined) ?? []))
      next = page.links?.pages?.next
      // The token goes only where it was meant to: a next link elsewhere is not followed.
      if (next && new URL(next).origin !== first.origin)
        throw new DigitalOceanError(
          'GET',
          path,
          200,
          'bad_link',
          `pagination link to another origin: ${next}`,
        )
    }
    return out
  }

  private backoff(attempt: number): number {
    return Math.min(1000 * 2 ** attempt, 30_000)
  }

  private rateLimitWait(h: Headers): number {
    const after = Number(h.get('retry-after'))
    if (after > 0) return Math.min(after * 1000, MAX_WAIT_MS)
    const reset = Number(h.get('ratelimit-reset'))
    if (reset > 0) return Math.min(Math.max(reset * 1000 - this.now(), 1000), MAX_WAIT_MS)
    return 1000
  }

  private async wait(ms: number, why: string): Promise<void> {
    this.opts.events?.retry?.(ms, why)
    await this.sleep(ms)
  }

  // Droplets

  async createDroplet(req: DropletCreate): Promise<{ droplet: Droplet; action: number | undefined }> {
    const r = await this.request<{ droplet: Droplet; links?: { actions?: ActionLink[] } }>(
      'POST',
      '/v2/droplets',
      req,
    )
    return { droplet: r.droplet, action: r.links?.actions?.[0]?.id }
  }

  async droplet(id: number): Promise<Droplet> {
    return (await this.request<{ droplet: Droplet }>('GET', `/v2/droplets/${id}`)).droplet
  }

  droplets(tag: string): Promise<Droplet[]> {
    return this.list<Droplet>(`/v2/droplets?tag_name=${encodeURIComponent(tag)}`, 'droplets')
  }

  async deleteDroplet(id: number): Promise<void> {
    await this.request('DELETE', `/v2/droplets/${id}`)
  }

  /** Deletes every droplet with the tag: a create retried after a 5xx that made two is cleaned up whole. */
  async deleteDropletsByTag(tag: string): Promise<void> {
    await this.request('DELETE', `/v2/droplets?tag_name=${encodeURIComponent(tag)}`)
  }

  async dropletAction(id: number, body: { type: string; name?: string }): Promise<Action> {
    return (await this.request<{ action: Action }>('POST', `/v2/droplets/${id}/actions`, body)).action
  }

  async action(id: number): Promise<Action> {
    return (await this.request<{ action: Action }>('GET', `/v2/actions/${id}`)).action
  }

  // Reserved IPs

  async createReservedIp(dropletId: number): Promise<{ ip: ReservedIp; action: number | undefined }> {
    const r = await this.request<{ reserved_ip: ReservedIp; links?: { actions?: ActionLink[] } }>(
      'POST',
      '/v2/reserved_ips',
      { droplet_id: dropletId },
    )
    return { ip: r.reserved_ip, action: r.links?.actions?.[0]?.id }
  }

  reservedIps(): Promise<ReservedIp[]> {
    return this.list<ReservedIp>('/v2/reserved_ips', 'reserved_ips')
  }

  async deleteReservedIp(ip: string): Promise<void> {
    await this.request('DELETE', `/v2/reserved_ips/${ip}`)
  }

  // Snapshots and tags

  snapshots(): Promise<Snapshot[]> {
    return this.list<Snapshot>('/v2/snapshots?resource_type=droplet', 'snapshots')
  }

  async deleteTag(name: string): Promise<void> {
    await this.request('DELETE', `/v2/tags/${encodeURIComponent(name)}`)
  }
}
