import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { IotError } from '../errors.js'
import type { Credential, DeviceRow, Keyset, Listener, Order, Page, Store } from '../store/index.js'

/** PostgreSQL channel on which device changes are announced to every process's credential cache. */
export const DEVICE_CHANNEL = 'iotcore_devices'
/** Full reload of the cache, in case a notification was missed while the LISTEN connection was down. */
const CACHE_RELOAD_MS = 60_000

export function newToken(): string {
  return 'iot_' + randomBytes(24).toString('base64url')
}

/** Device tokens are 192 random bits: a fast hash is enough, no password stretching needed. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

export function sameHash(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  return timingSafeEqual(Buffer.from(a), Buffer.from(b))
}

const ID_ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789'
/** Short, URL- and topic-safe, unambiguous when read aloud: `d` + 15 characters, 75 bits. */
export function newDeviceId(): string {
  const b = randomBytes(15)
  let s = 'd'
  for (const x of b) s += ID_ALPHABET[x & 31]
  return s
}

export interface DeviceView extends DeviceRow {
  online: boolean
}

/** The device registry for the API and CLI: every change is announced to the gateways' caches. */
export class Devices {
  constructor(
    private readonly store: Store,
    private readonly offlineAfterSeconds: number,
    /** This process's own credential cache, updated before a change is answered (others hear the NOTIFY). */
    private readonly cache?: CredentialCache,
  ) {}

  async create(input: { name: string; imei?: string; attributes?: Record<string, unknown> }) {
    const token = newToken()
    const row = await this.store.devices.create({
      id: newDeviceId(),
      name: input.name,
      imei: input.imei,
      tokenHash: hashToken(token),
      attributes: input.attributes,
    })
    await this.announce(row.id)
    return { ...this.view(row), token }
  }

  async list(limit: number, order: Order, after?: Keyset): Promise<Page<DeviceView>> {
    const page = await this.store.devices.list(limit, order, after)
    return { items: page.items.map((r) => this.view(r)), next: page.next }
  }

  async get(id: string): Promise<DeviceView> {
    const row = await this.store.devices.get(id)
    if (!row) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    return this.view(row)
  }

  async delete(id: string): Promise<void> {
    if (!(await this.store.devices.delete(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    await this.announce(id)
  }

  async rotateToken(id: string): Promise<string> {
    const token = newToken()
    if (!(await this.store.devices.setTokenHash(id, hashToken(token))))
      throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    await this.announce(id)
    return token
  }

  private async announce(id: string): Promise<void> {
    await this.store.notifications.notify(DEVICE_CHANNEL, id)
    await this.cache?.refresh(id)
  }

  private view(r: DeviceRow): DeviceView {
    const online =
      r.lastSeenAt !== null && Date.now() - Date.parse(r.lastSeenAt) < this.offlineAfterSeconds * 1000
    return { ...r, online }
  }
}

/**
 * The gateways' view of device credentials: all of them in memory, so devices keep connecting while
 * PostgreSQL is down. Changes arrive by LISTEN/NOTIFY; a miss or a wrong token asks the database once, so a
 * device created or rotated a moment ago is never refused for a stale cache.
 */
export class CredentialCache {
  private byId = new Map<string, Credential>()
  private byImei = new Map<string, Credential>()
  private listener: Listener | undefined
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.reload()
    this.listener = await this.store.notifications.listen(DEVICE_CHANNEL, {
      notify: (id) => this.refresh(id).catch(() => {}),
      resumed: () => this.reloadOrKeep(),
    })
    this.timer = setInterval(() => this.reloadOrKeep(), CACHE_RELOAD_MS)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    const l = this.listener
    this.listener = undefined
    await l?.stop()
  }

  get size(): number {
    return this.byId.size
  }

  private async reload(): Promise<void> {
    const all = await this.store.devices.credentials()
    const byId = new Map<string, Credential>()
    const byImei = new Map<string, Credential>()
    for (const c of all) {
      byId.set(c.id, c)
      if (c.imei) byImei.set(c.imei, c)
    }
    this.byId = byId
    this.byImei = byImei
  }

  private reloadOrKeep(): void {
    this.reload().catch((err) =>
      this.log.warn({ err: err.message }, 'credential reload failed; keeping the cache'),
    )
  }

  /** Reads one device's credential again (after a change made here or announced by another process). */
  async refresh(id: string): Promise<Credential | undefined> {
    const c = await this.store.devices.credential(id)
    const old = this.byId.get(id)
    if (old?.imei) this.byImei.delete(old.imei)
    if (c) {
      this.byId.set(id, c)
      if (c.imei) this.byImei.set(c.imei, c)
    } else this.byId.delete(id)
    return c
  }

  /** True if `token` is this device's. Never throws. */
  async verify(id: string, token: string): Promise<boolean> {
    const hash = hashToken(token)
    const c = this.byId.get(id)
    if (c && sameHash(c.tokenHash, hash)) return true
    try {
      const fresh = await this.refresh(id)
      return fresh !== undefined && sameHash(fresh.tokenHash, hash)
    } catch {
      return false
    }
  }

  byImeiLookup(imei: string): Credential | undefined {
    return this.byImei.get(imei)
  }
}
