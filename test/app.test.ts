import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { type Server, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import pg from 'pg'
import pino from 'pino'
import { App } from '../src/app.js'
import { createLogger } from '../src/logger.js'
import { freePort } from '../src/store/embedded.js'
import { freshDatabase, startPlatform, testConfig, waitFor } from './helpers/index.js'

describe('app: one lifecycle', () => {
  const dirs: string[] = []
  const dataDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'iotcore-app-'))
    dirs.push(d)
    return d
  }
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  test('/readyz reports the components that have a health, by role', async () => {
    const all = await startPlatform()
    const gateway = await startPlatform({ IOTCORE_ROLES: 'api,gateway' })
    try {
      const r = await fetch(`${all.base}/readyz`)
      assert.equal(r.status, 200)
      const body = await r.json()
      assert.equal(body.status, 'ready')
      const gatewayParts = ['events', 'mqtt-operators', 'mqtt', 'checks']
      assert.deepEqual(Object.keys(body.components), ['database', 'queue', 'ingest', ...gatewayParts])
      assert.equal(body.components.queue.kind, 'local')
      assert.deepEqual(body.components['mqtt-operators'], { ok: true, connections: 0, cutSlow: 0 })
      const g = await (await fetch(`${gateway.base}/readyz`)).json()
      assert.deepEqual(Object.keys(g.components), ['database', 'queue', ...gatewayParts])
    } finally {
      await gateway.stop()
      await all.stop()
    }
  })

  test('a start that fails half-way (the MQTT port is taken) stops everything it had started', async () => {
    const databaseUrl = await freshDatabase()
    const dir = dataDir()
    const taken: Server = createServer()
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
    const mqttPort = (taken.address() as { port: number }).port
    const app = new App(
      testConfig(databaseUrl, dir, { IOTCORE_MQTT_PORT: String(mqttPort) }),
      createLogger('silent'),
    )
    try {
      await assert.rejects(app.start(), /EADDRINUSE/)
    } finally {
      taken.close()
    }
    // The HTTP server had started (it comes before MQTT) and is closed again.
    assert.ok(app.httpPort > 0)
    await assert.rejects(fetch(`http://127.0.0.1:${app.httpPort}/healthz`))
    // The heartbeat said it stopped, and the pool is closed.
    const c = new pg.Client({ connectionString: databaseUrl })
    await c.connect()
    const { rows } = await c.query('SELECT stopped_at FROM services')
    await c.end()
    assert.equal(rows.length, 1)
    assert.notEqual(rows[0].stopped_at, null)
    assert.equal(app.store.pool.ended, true)
    // The data dir and database are free for the next start.
    const again = new App(testConfig(databaseUrl, dir), createLogger('silent'))
    await again.start()
    assert.equal((await fetch(`http://127.0.0.1:${again.httpPort}/healthz`)).status, 200)
    await again.stop()
  })

  test('a stop while the start waits for an unreachable database ends the wait', async () => {
    const nowhere = `postgres://iotcore:x@127.0.0.1:${await freePort()}/iotcore`
    const lines: string[] = []
    const app = new App(
      testConfig(nowhere, dataDir()),
      pino({ level: 'warn' }, { write: (s: string) => lines.push(s) }),
    )
    let settled = false
    const starting = app.start().finally(() => (settled = true))
    // The server is away, not refusing: the start waits for it.
    await waitFor(() => lines.some((l) => l.includes('waiting for PostgreSQL')))
    assert.equal(settled, false)
    await app.stop()
    await assert.rejects(starting)
  })
})
