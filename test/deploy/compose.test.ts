import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { parse } from 'yaml'
import { ROLES, loadConfig, parseRoles } from '../../src/config/index.js'
import { parseDockerfile } from './dockerfile.js'
import { root } from './processes.js'

interface Service {
  image?: string
  build?: string
  command?: string[]
  environment?: Record<string, string>
  ports?: string[]
  depends_on?: Record<string, { condition: string }>
  healthcheck?: unknown
}

const compose = parse(readFileSync(join(root, 'compose.yaml'), 'utf8'), { merge: true }) as {
  services: Record<string, Service>
  volumes: Record<string, unknown>
}
const services = compose.services
const iotcore = Object.entries(services).filter(([, s]) => s.build === '.')

/** Compose's `${VAR:-default}` interpolation, with nothing set in the shell. */
function interpolate(v: string): string {
  return String(v).replace(/\$\{(\w+):?-([^}]*)\}/g, (_, _k, def) => def)
}

/** The config a service's container would load, and every variable name the schema read to build it. */
function configOf(s: Service) {
  const env = Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(v)]))
  const read = new Set<string>()
  const seen = new Proxy(env, {
    get: (t, k) => {
      read.add(String(k))
      return t[String(k)]
    },
  })
  const roles = s.command?.[0] === 'start' ? s.command[s.command.indexOf('--roles') + 1] : undefined
  return { config: loadConfig(seen, { roles }), read, env }
}

describe('compose.yaml, checked against the config schema and the Dockerfile (no Docker engine runs here)', () => {
  test('PostgreSQL, RabbitMQ, the migrations and the three roles, which together run every role', () => {
    assert.ok(services.postgres?.image?.startsWith('postgres:'))
    assert.ok(services.rabbitmq?.image?.startsWith('rabbitmq:'))
    assert.deepEqual(services.migrate.command, ['migrate'])
    const roles = ['web', 'worker', 'clock'].map((n) =>
      parseRoles(configOf(services[n]).config.roles.join(',')),
    )
    assert.deepEqual(roles, [['api', 'gateway'], ['ingest'], ['organizer']])
    assert.deepEqual([...new Set(roles.flat())].sort(), [...ROLES].sort())
    for (const [name, s] of iotcore) {
      assert.ok(existsSync(join(root, s.build!, 'Dockerfile')), `${name} builds the Dockerfile`)
      assert.equal(s.depends_on?.postgres?.condition, 'service_healthy', name)
      assert.equal(s.depends_on?.rabbitmq?.condition, 'service_healthy', name)
      if (name !== 'migrate')
        assert.equal(s.depends_on?.migrate?.condition, 'service_completed_successfully', name)
    }
  })

  test('every variable is one the config reads, with a value it accepts; the URLs name the compose services and their credentials', () => {
    const pg = services.postgres.environment!
    const mq = services.rabbitmq.environment!
    for (const [name, s] of iotcore) {
      const { config, read, env } = configOf(s)
      for (const k of Object.keys(env))
        assert.ok(read.has(k), `${name}: ${k} is not a variable iotcore reads`)
      const db = new URL(config.databaseUrl!)
      assert.deepEqual(
        [db.hostname, db.port, db.username, db.password, db.pathname],
        ['postgres', '5432', pg.POSTGRES_USER, pg.POSTGRES_PASSWORD, `/${pg.POSTGRES_DB}`],
        name,
      )
      const amqp = new URL(config.amqpUrl!)
      assert.deepEqual(
        [amqp.hostname, amqp.port, amqp.username, amqp.password],
        ['rabbitmq', '5672', mq.RABBITMQ_DEFAULT_USER, mq.RABBITMQ_DEFAULT_PASS],
        name,
      )
    }
  })

  test("published ports are the ports the service listens on and the image exposes; every role keeps the HTTP port the image's health check reads", () => {
    const runtime = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8')).stages.at(-1)!.steps
    const exposed = runtime
      .filter((s) => s.op === 'EXPOSE')
      .flatMap((s) => s.args.split(/\s+/))
      .map(Number)
    const healthcheck = runtime.find((s) => s.op === 'HEALTHCHECK')!.args
    assert.match(healthcheck, /\/readyz/)
    for (const [name, s] of iotcore) {
      if (name === 'migrate') continue
      const { config } = configOf(s)
      assert.notEqual(config.httpPort, null, `${name} serves /readyz for the health check`)
      assert.match(healthcheck, new RegExp(`\\|\\|${config.httpPort}\\)`), `${name}: the health check's port`)
      const listening = [config.httpPort, config.mqttPort].filter((p) => p !== null)
      for (const p of s.ports ?? []) {
        const inside = Number(p.split(':').at(-1))
        assert.ok(listening.includes(inside), `${name} publishes ${p}: it listens on ${listening.join(', ')}`)
        assert.ok(exposed.includes(inside), `${name} publishes ${p}: the image exposes ${exposed.join(', ')}`)
      }
    }
    assert.deepEqual(services.web.ports, ['8080:8080', '1883:1883'])
  })

  test('every named volume a service mounts is declared', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of (s as { volumes?: string[] }).volumes ?? []) {
        const source = v.split(':')[0]
        if (!source.startsWith('.') && !source.startsWith('/'))
          assert.ok(source in compose.volumes, `${name} mounts ${source}`)
      }
    }
  })
})
