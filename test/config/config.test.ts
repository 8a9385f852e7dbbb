import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { DEFAULTS, loadConfig } from '../../src/config/index.js'
import { IotError } from '../../src/errors.js'

describe('config', () => {
  test('defaults follow CONTRACT.md and the result is frozen', () => {
    const c = loadConfig({})
    assert.equal(c.httpPort, 8080)
    assert.equal(c.mqttPort, 1883)
    assert.equal(c.signalPort, 2006)
    assert.equal(c.host, '0.0.0.0')
    assert.equal(c.databaseUrl, undefined)
    assert.deepEqual(c.roles, ['api', 'gateway', 'ingest', 'organizer'])
    assert.equal(c.maxPayloadBytes, DEFAULTS.maxPayloadBytes)
    assert.ok(c.queueMaxBytes >= DEFAULTS.queueMinBytes)
    assert.ok(Object.isFrozen(c))
  })

  test('the quality checks default to 300 km/h, no age limit, 10 flagged readings an hour, gaps alerted after 600 s', () => {
    const c = loadConfig({})
    assert.deepEqual(
      [
        c.maxSpeedKmh,
        c.maxReadingAgeSeconds,
        c.deviceCheckViolations,
        c.deviceCheckWindowSeconds,
        c.gapAlertAfterSeconds,
      ],
      [300, 0, 10, 3600, 600],
    )
  })

  test('PORT sets the HTTP port; IOTCORE_HTTP_PORT wins over it; off disables a listener', () => {
    assert.equal(loadConfig({ PORT: '3000' }).httpPort, 3000)
    assert.equal(loadConfig({ PORT: '3000', IOTCORE_HTTP_PORT: '4000' }).httpPort, 4000)
    assert.equal(loadConfig({ IOTCORE_MQTT_PORT: 'off' }).mqttPort, null)
  })

  test('sizes accept units', () => {
    assert.equal(loadConfig({ IOTCORE_QUEUE_MAX_BYTES: '2GiB' }).queueMaxBytes, 2 * 1024 ** 3)
    assert.equal(loadConfig({ IOTCORE_QUEUE_MAX_BYTES: '10485760' }).queueMaxBytes, 10485760)
  })

  test('roles come from the flag', () => {
    assert.deepEqual(loadConfig({}, { roles: 'gateway,ingest' }).roles, ['gateway', 'ingest'])
  })

  for (const [name, value] of [
    ['IOTCORE_MQTT_PORT', '70000'],
    ['IOTCORE_HTTP_PORT', 'eighty'],
    ['DATABASE_URL', 'mysql://x'],
    ['AMQP_URL', 'not a url'],
    ['IOTCORE_QUEUE_MAX_BYTES', 'lots'],
    ['IOTCORE_OFFLINE_AFTER', '-1'],
    ['IOTCORE_LOG_LEVEL', 'loud'],
    ['IOTCORE_ADMIN_TOKEN', 'short'],
    ['IOTCORE_MAX_SPEED_KMH', '0'],
    ['IOTCORE_DEVICE_CHECK_WINDOW', 'an hour'],
  ] as const) {
    test(`a bad ${name} fails at start, naming the variable`, () => {
      assert.throws(
        () => loadConfig({ [name]: value }),
        (err: unknown) =>
          err instanceof IotError && err.code === 'IOT_ERR_CONFIG_INVALID' && err.message.includes(name),
      )
    })
  }

  test('an unknown role fails', () => {
    assert.throws(() => loadConfig({}, { roles: 'api,web' }), /--roles/)
  })
})
