#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { markAdminTokenShown } from '../api/admin-token.js'
import { App } from '../app.js'
import { loadConfig } from '../config/index.js'
import { Devices } from '../devices/index.js'
import { IotError } from '../errors.js'
import { createLogger } from '../logger.js'
import { openStore } from '../store/open.js'

/** A graceful stop that takes longer than this (a database that never answers) ends the process anyway. */
const SHUTDOWN_DEADLINE_MS = 30_000

const USAGE = `iotcore: an IoT cloud platform

Usage:
  iotcore start [--roles api,gateway,ingest,organizer]   run the platform (default: all roles)
  iotcore migrate                                         apply database migrations
  iotcore device create NAME [--imei IMEI]                register a device; prints its id and token
  iotcore simulate --devices N --rate R --protocol mqtt|http|teltonika|osmand|jsonl [--duration S]
                                                          a simulated fleet (simulate --help)
  iotcore cloud up|down|list|snapshot [--dry-run] [--ttl D]   a DigitalOcean droplet running iotcore (cloud --help)

Configuration is read from the environment (see README.md): IOTCORE_DATA_DIR, DATABASE_URL, PORT, ...`

async function main(argv: string[]): Promise<number> {
  // These talk to a running platform or to DigitalOcean, with flags of their own; they run no part of it.
  if (argv[0] === 'simulate') {
    const { runSimulate } = await import('../simulate/cli.js')
    const stop = new AbortController()
    process.once('SIGINT', () => stop.abort())
    const r = await runSimulate(argv.slice(1), {
      out: (l) => console.log(l),
      err: (t) => process.stderr.write(t),
      isTTY: process.stderr.isTTY === true,
      env: process.env,
      signal: stop.signal,
    })
    // Readings handed to a device and never answered: the run did not deliver what it says it sent.
    return typeof r === 'number' ? r : r.unanswered > 0 ? 1 : 0
  }
  if (argv[0] === 'cloud') {
    const { runCloud } = await import('../cloud/cli.js')
    return runCloud(argv.slice(1), {
      out: (l) => console.log(l),
      err: (t) => process.stderr.write(t),
      isTTY: process.stderr.isTTY === true,
      env: process.env,
    })
  }
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { roles: { type: 'string' }, imei: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  const [cmd, sub, name] = positionals
  if (values.help || !cmd) {
    console.log(USAGE)
    return cmd || values.help ? 0 : 1
  }
  const config = loadConfig(process.env, { roles: values.roles })
  const log = createLogger(config.logLevel)

  if (cmd === 'start') {
    const app = new App(config, log)
    let stopping = false
    const shutdown = (signal: string) => {
      if (stopping) return
      stopping = true
      log.info({ signal }, 'shutting down')
      // Acked messages are on disk already: past the deadline, exiting loses nothing, hanging helps nobody.
      setTimeout(() => {
        log.error({ seconds: SHUTDOWN_DEADLINE_MS / 1000 }, 'shutdown did not finish in time; exiting')
        process.exit(1)
      }, SHUTDOWN_DEADLINE_MS).unref()
      app.stop().then(
        () => process.exit(0),
        (err) => {
          log.error({ err }, 'shutdown failed')
          process.exit(1)
        },
      )
    }
    process.on('SIGTERM', () => shutdown('SIGTERM'))
    process.on('SIGINT', () => shutdown('SIGINT'))
    // A start that fails stops what it started before it throws.
    await app.start()
    console.log(banner(app))
    // The admin token is for the API: shown by the first process that serves it, not by a gateway or worker.
    if (app.has('api') && app.admin.show) markAdminTokenShown(app.admin)
    return -1
  }

  if (cmd === 'migrate') {
    const { store, embedded } = await openStore(config, log)
    // Opening the store migrated it: say what that applied.
    const applied = store.applied
    console.log(applied.length ? `applied migrations ${applied.join(', ')}` : 'the database is up to date')
    await store.stop()
    await embedded?.stop()
    return 0
  }

  if (cmd === 'device' && sub === 'create') {
    if (!name) {
      console.error('usage: iotcore device create NAME [--imei IMEI]')
      return 1
    }
    const { store, embedded } = await openStore(config, log)
    try {
      const d = await new Devices(store, config.offlineAfterSeconds).create({ name, imei: values.imei })
      console.log(JSON.stringify({ id: d.id, name: d.name, imei: d.imei, token: d.token }, null, 2))
    } finally {
      await store.stop()
      await embedded?.stop()
    }
    return 0
  }

  console.error(`unknown command: ${positionals.join(' ')}\n\n${USAGE}`)
  return 1
}

/** What a started process runs, and where: a line for each listener or route set it serves, and only those. */
function banner(app: App): string {
  const { config } = app
  const host = config.host === '0.0.0.0' ? 'localhost' : config.host
  const s = app.tls ? 's' : ''
  const http = app.httpPort ? `http${s}://${host}:${app.httpPort}` : undefined
  const ws = http && app.mqtt ? `ws${s}://${host}:${app.httpPort}/mqtt` : undefined
  const api = app.has('api')
  const lines = [`iotcore is running (roles: ${config.roles.join(', ')}; data: ${config.dataDir})`]
  if (api && http) lines.push(`  REST API   ${http}/api/v1   (docs: ${http}/docs; dashboard: ${http}/)`)
  if (app.mqtt && http) lines.push(`  HTTP ingest POST ${http}/api/v1/devices/<id>/telemetry`)
  if (app.mqtt?.port)
    lines.push(`  MQTT       mqtt://${host}:${app.mqtt.port}${ws ? `   (WebSocket: ${ws})` : ''}`)
  else if (ws) lines.push(`  MQTT       over WebSocket only: ${ws}`)
  if (app.mqtt?.tlsPort) lines.push(`  MQTTS      mqtts://${host}:${app.mqtt.tlsPort}`)
  const devices = [
    app.teltonika && `Teltonika ${host}:${app.teltonika.port}`,
    app.osmand && `OsmAnd http://${host}:${app.osmand.port}`,
    app.jsonl && `JSON lines ${host}:${app.jsonl.port}`,
    app.signal && `signal ${host}:${app.signal.port}`,
  ].filter(Boolean)
  if (devices.length > 0) lines.push(`  devices    ${devices.join('   ')}`)
  if (http) lines.push(`  health     ${http}/readyz   metrics: ${http}/metrics`)
  if (api)
    lines.push(
      app.admin.show
        ? `  admin token (shown once, kept in ${app.admin.file}):\n    ${app.admin.token}`
        : `  admin token: ${config.adminToken ? 'from IOTCORE_ADMIN_TOKEN' : `in ${app.admin.file}`}`,
    )
  return lines.join('\n')
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code)
  },
  (err) => {
    if (err instanceof IotError) console.error(`${err.code}: ${err.message}`)
    else console.error(err)
    process.exit(1)
  },
)
