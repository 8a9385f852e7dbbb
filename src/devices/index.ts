import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { IotError } from '../errors.js'
import type { Credential, DeviceRow, Listener, Page, Store } from '../store/index.js'

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

/**
 * What DELETE does with a device's data. `keep` (the default: a bare DELETE never destroys readings) retires the
 * device: its credentials are revoked, its connections cut, it leaves the default list, and its telemetry stays
 * readable until a second DELETE with `delete` removes the device and its telemetry together.
 */
export const DELETE_DATA = ['keep', 'delete'] as const
export type DeleteData = (typeof DELETE_DATA)[number]

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

  /** The store's page of devices (the same arguments), as the API shows them. */
  async list(...args: Parameters<Store['devices']['list']>): Promise<Page<DeviceView>> {
    const page = await this.store.devices.list(...args)
    return { items: page.items.map((r) => this.view(r)), next: page.next }
  }

  async get(id: string): Promise<DeviceView> {
    const row = await this.store.devices.get(id)
    if (!row) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    return this.view(row)
  }

  /** Renames it or replaces its attributes, live or retired: nothing a connection depends on changes. */
  async update(
    id: string,
    patch: { name?: string; attributes?: Record<string, unknown> },
  ): Promise<DeviceView> {
    const row = await this.store.devices.update(id, patch)
    if (!row) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    return this.view(row)
  }

  /**
   * Retires the device (`keep`; again on a retired one: nothing to do) or removes it with its telemetry
   * (`delete`, live or retired). Either way its credentials are gone before this resolves, and every gateway
   * process cuts its connections when the announcement reaches its credential cache.
   */
  async delete(id: string, data: DeleteData): Promise<void> {
    if (data === 'delete') {
      if (!(await this.store.devices.delete(id))) throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    } else {
      const r = await this.store.devices.retire(id)
      if (r === 'missing') throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
      if (r === 'already retired') return
    }
    await this.announce(id)
  }

  /** A new token; the old one stops working, and connections made with it are cut (see delete). */
  async rotateToken(id: string): Promise<string> {
    const token = newToken()
    if (!(await this.store.devices.setTokenHash(id, hashToken(token)))) {
      if (await this.store.devices.get(id)) throw new IotError('IOT_ERR_DEVICE_RETIRED', [id])
      throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', id)
    }
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
 * Told which devices' credentials changed (a token rotated, a device retired or deleted), after the cache holds
 * the new state: `CredentialCache.current(id)` is what a connection must still match.
 */
export type CredentialsChanged = (deviceIds: readonly string[]) => void

/**
 * The gateways' view of device credentials: all of them in memory, so devices keep connecting while
 * PostgreSQL is down. Changes arrive by LISTEN/NOTIFY; a miss or a wrong token asks the database once, so a
 * device created or rotated a moment ago is never refused for a stale cache. Whoever holds connections
 * (the MQTT gateway) watches it, to cut those whose credential was revoked.
 */
export class CredentialCache {
  private byId = new Map<string, Credential>()
  private byImei = new Map<string, Credential>()
  private listener: Listener | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly watchers = new Set<CredentialsChanged>()
  /**
   * Reads of the database are numbered, so that a slow one never overwrites what a later one found: per device
   * with reads under way, how many and the number of the latest one applied; the number of the last full
   * reload applied; and, while one runs, the devices a later single read updated meanwhile.
   */
  private reads = 0
  private readonly reading = new Map<string, { applied: number; pending: number }>()
  private reloaded = 0
  private reloading: { n: number; updated: Set<string> } | null = null
  private reloads: Promise<void> = Promise.resolve()

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

  /** Calls `fn` with the ids of devices whose credentials changed, until the returned function is called. */
  watch(fn: CredentialsChanged): () => void {
    this.watchers.add(fn)
    return () => this.watchers.delete(fn)
  }

  /** The device's credential as the cache holds it now: undefined if it is retired, deleted or unknown. */
  current(id: string): Credential | undefined {
    return this.byId.get(id)
  }

  /** Full reloads run one at a time: each reads all credentials after the one before was applied. */
  private reload(): Promise<void> {
    const run = this.reloads.then(() => this.reloadOnce())
    this.reloads = run.catch(() => {})
    return run
  }

  private async reloadOnce(): Promise<void> {
    const mine = { n: ++this.reads, updated: new Set<string>() }
    this.reloading = mine
    let all: Credential[]
    try {
      all = await this.store.devices.credentials()
    } finally {
      this.reloading = null
    }
    const byId = new Map<string, Credential>()
    for (const c of all) byId.set(c.id, c)
    // A device read alone after this snapshot was taken keeps that newer answer.
    for (const id of mine.updated) {
      const c = this.byId.get(id)
      if (c) byId.set(id, c)
      else byId.delete(id)
    }
    const changed: string[] = []
    for (const [id, old] of this.byId) if (byId.get(id)?.tokenHash !== old.tokenHash) changed.push(id)
    const byImei = new Map<string, Credential>()
    for (const c of byId.values()) if (c.imei) byImei.set(c.imei, c)
    this.byId = byId
    this.byImei = byImei
    this.reloaded = mine.n
    if (changed.length > 0) this.tell(changed)
  }

  private reloadOrKeep(): void {
    this.reload().catch((err) =>
      this.log.warn({ err: err.message }, 'credential reload failed; keeping the cache'),
    )
  }

  /**
   * Reads one device's credential again (after a change made here or announced by another process) and returns
   * it; the cache takes it unless a read that started later (alone or a full reload) was applied already.
   */
  async refresh(id: string): Promise<Credential | undefined> {
    const n = ++this.reads
    let entry = this.reading.get(id)
    if (!entry) this.reading.set(id, (entry = { applied: 0, pending: 0 }))
    entry.pending++
    let c: Credential | undefined
    try {
      c = await this.store.devices.credential(id)
    } finally {
      // With none under way, every later read is numbered above every earlier one: nothing to keep.
      if (--entry.pending === 0) this.reading.delete(id)
    }
    if (n < entry.applied || n < this.reloaded) return c
    entry.applied = n
    if (this.reloading && n > this.reloading.n) this.reloading.updated.add(id)
    const old = this.byId.get(id)
    // A retired device's imei may belong to a new device by now: remove only its own entry.
    if (old?.imei && this.byImei.get(old.imei) === old) this.byImei.delete(old.imei)
    if (c) {
      this.byId.set(id, c)
      if (c.imei) this.byImei.set(c.imei, c)
    } else this.byId.delete(id)
    if (old !== undefined && old.tokenHash !== c?.tokenHash) this.tell([id])
    return c
  }

  private tell(ids: readonly string[]): void {
    for (const w of this.watchers) {
      try {
        w(ids)
      } catch (err) {
        this.log.error({ err }, 'a credential watcher failed')
      }
    }
  }

  /** The credential `token` belongs to, if it is this device's; never throws. */
  async authenticate(id: string, token: string): Promise<Credential | undefined> {
    const hash = hashToken(token)
    const c = this.byId.get(id)
    if (c && sameHash(c.tokenHash, hash)) return c
    try {
      const fresh = await this.refresh(id)
      return fresh !== undefined && sameHash(fresh.tokenHash, hash) ? fresh : undefined
    } catch {
      return undefined
    }
  }

  /** True if `token` is this device's. Never throws. */
  async verify(id: string, token: string): Promise<boolean> {
    return (await this.authenticate(id, token)) !== undefined
  }

  byImeiLookup(imei: string): Credential | undefined {
    return this.byImei.get(imei)
  }
}
