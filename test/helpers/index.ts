import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Static } from '@sinclair/typebox'
import pg from 'pg'
import type { QuarantineItem as QuarantineItemSchema } from '../../src/api/schemas.js'
import { App } from '../../src/app.js'
import { createLogger } from '../../src/logger.js'
import { type Config, loadConfig } from '../../src/config/index.js'
import { type Keyset, type Page, Store } from '../../src/store/index.js'

export const ADMIN_TOKEN = 'test-admin-token-0123456789'

/** A fresh database on the test PostgreSQL server that `npm test` started. */
export async function freshDatabase(): Promise<string> {
  const base = process.env.IOTCORE_TEST_DATABASE_URL
  if (!base) throw new Error('IOTCORE_TEST_DATABASE_URL is unset: run the tests with `npm test`')
  const name = `t_${randomBytes(6).toString('hex')}`
  const c = new pg.Client({ connectionString: base })
  await c.connect()
  await c.query(`CREATE DATABASE ${name}`)
  await c.end()
  const u = new URL(base)
  u.pathname = `/${name}`
  return u.toString()
}

/** A migrated Store on a fresh database, as one process would have it; stop it when done. */
export async function freshStore(url?: string): Promise<Store> {
  const store = new Store(url ?? (await freshDatabase()), createLogger('silent'), 1)
  await store.start()
  return store
}

/** Every page of a store's keyset scan, from the first: `page(after)` reads the one that starts after `after`. */
export async function keysetPages<T>(page: (after: Keyset | undefined) => Promise<Page<T>>): Promise<T[][]> {
  const pages: T[][] = []
  let after: Keyset | undefined
  for (;;) {
    const p = await page(after)
    pages.push(p.items)
    if (!p.next) return pages
    after = p.next
  }
}

export interface Device {
  id: string
  token: string
}

/** An item of GET /api/v1/quarantine. */
export type QuarantineItem = Static<typeof QuarantineItemSchema>

export interface Platform {
  app: App
  base: string
  api: string
  mqttPort: number
  httpPort: number
  databaseUrl: string
  dataDir: string
  /** Admin request; returns status and parsed JSON body. */
  req(
    method: string,
    path: string,
    body?: unknown,
    token?: string,
  ): Promise<{ status: number; body: any; headers: Headers }>
  createDevice(name?: string, extra?: Record<string, unknown>): Promise<Device>
  /** A device's HTTP ingest request, with its token: `body` as is if a string or bytes, else as JSON. */
  postTelemetry(dev: Device, body: unknown, headers?: Record<string, string>): Promise<Response>
  /** The quarantine items of a device, newest first, of one reason or all. */
  quarantine(deviceId: string, reason?: string): Promise<QuarantineItem[]>
  metric(name: string, labels?: string): Promise<number>
  stop(): Promise<void>
}

/**
 * The listeners on fixed default ports, off: the device protocols' (5027, 5055, 5060, 2006) and MQTTS (8883,
 * only with a certificate). A test turns one on with '0' (a free port); a default would collide with another
 * iotcore on the machine (a colleague's, a benchmark's). Spawned processes get it in their environment too.
 */
export const LISTENERS_OFF = {
  IOTCORE_TELTONIKA_PORT: 'off',
  IOTCORE_OSMAND_PORT: 'off',
  IOTCORE_JSONL_PORT: 'off',
  IOTCORE_SIGNAL_PORT: 'off',
  IOTCORE_MQTTS_PORT: 'off',
} as const

/** A platform's configuration in a test: this database and data dir, free ports, the test admin token. */
export function testConfig(databaseUrl: string, dataDir: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: databaseUrl,
    IOTCORE_DATA_DIR: dataDir,
    IOTCORE_HOST: '127.0.0.1',
    IOTCORE_HTTP_PORT: '0',
    IOTCORE_MQTT_PORT: '0',
    ...LISTENERS_OFF,
    IOTCORE_ADMIN_TOKEN: ADMIN_TOKEN,
    IOTCORE_QUEUE_MAX_BYTES: '256MiB',
    IOTCORE_INGEST_BATCH_MS: '10',
    IOTCORE_LOG_LEVEL: process.env.IOTCORE_TEST_LOG_LEVEL ?? 'silent',
    ...env,
  })
}

/** Starts the whole platform in this process on its own database, data dir and free ports. */
export async function startPlatform(
  env: Record<string, string> = {},
  keep?: { dataDir?: string; databaseUrl?: string },
): Promise<Platform> {
  const databaseUrl = keep?.databaseUrl ?? (await freshDatabase())
  const dataDir = keep?.dataDir ?? mkdtempSync(join(tmpdir(), 'iotcore-test-'))
  const config = testConfig(databaseUrl, dataDir, env)
  const app = new App(config, createLogger(config.logLevel))
  await app.start()
  const base = `http://127.0.0.1:${app.httpPort}`
  const req: Platform['req'] = async (method, path, body, token = ADMIN_TOKEN) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const r = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    })
    const text = await r.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : undefined
    } catch {}
    return { status: r.status, body: parsed, headers: r.headers }
  }
  return {
    app,
    base,
    api: base + '/api/v1',
    mqttPort: app.mqtt?.port ?? 0,
    httpPort: app.httpPort,
    databaseUrl,
    dataDir,
    req,
    async createDevice(name = 'dev', extra = {}) {
      const r = await req('POST', '/api/v1/devices', { name, ...extra })
      if (r.status !== 201) throw new Error(`create device: ${r.status} ${JSON.stringify(r.body)}`)
      return { id: r.body.id, token: r.body.token }
    },
    postTelemetry(dev, body, headers = {}) {
      return fetch(`${base}/api/v1/devices/${dev.id}/telemetry`, {
        method: 'POST',
        headers: { authorization: `Bearer ${dev.token}`, 'content-type': 'application/json', ...headers },
        body:
          typeof body === 'string'
            ? body
            : Buffer.isBuffer(body)
              ? new Uint8Array(body)
              : JSON.stringify(body),
      })
    },
    async quarantine(deviceId, reason) {
      const r = await req(
        'GET',
        `/api/v1/quarantine?deviceId=${deviceId}${reason ? `&reason=${reason}` : ''}`,
      )
      if (r.status !== 200) throw new Error(`quarantine query: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.items
    },
    async metric(name, labels) {
      const text = await app.metrics.registry.metrics()
      let sum = 0
      for (const line of text.split('\n')) {
        if (!line.startsWith(name)) continue
        const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line)
        if (!m || m[1] !== name) continue
        if (labels && !(m[2] ?? '').includes(labels)) continue
        sum += Number(m[3])
      }
      return sum
    },
    async stop() {
      await app.stop()
      if (!keep?.dataDir) rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

/** What waitFor returns: the value `fn` found, without the falsy cases it kept polling through. */
export type Found<T> = Exclude<Awaited<T>, false | 0 | '' | null | undefined>

/** Thrown by a waitFor condition that can no longer come true (a process that exited): the wait ends at once. */
export class GiveUp extends Error {}

/**
 * The one polling helper: calls `fn` until it returns a truthy value, and returns that value. An error thrown
 * by `fn` counts as "not yet" (a server still starting) and is reported if time runs out, unless it is a
 * GiveUp. Fails after `ms`, a liveness bound, not a timing assertion. Polls after 10 ms, doubling to 100 ms:
 * quick for what happens at once, light on what `fn` queries while something takes minutes.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  ms = 20_000,
  what = 'condition',
): Promise<Found<T>> {
  const deadline = Date.now() + ms
  let last: unknown
  let pause = 10
  for (;;) {
    try {
      const v = await fn()
      if (v) return v as Found<T>
    } catch (err) {
      if (err instanceof GiveUp) throw new Error(`gave up waiting for ${what}: ${err.message}`)
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`)
    await new Promise((r) => setTimeout(r, pause))
    pause = Math.min(pause * 2, 100)
  }
}
