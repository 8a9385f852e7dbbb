import assert from 'node:assert/strict'
import { resolve } from 'node:path'
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

  test('CLOUDAMQP_URL (a PaaS add-on) sets the broker; AMQP_URL wins over it', () => {
    const add = 'amqps://u:p@cloudamqp.example/vh'
    assert.equal(loadConfig({ CLOUDAMQP_URL: add }).amqpUrl, add)
    assert.equal(loadConfig({ CLOUDAMQP_URL: add, AMQP_URL: 'amqp://x@h' }).amqpUrl, 'amqp://x@h')
  })

  test('sizes accept units', () => {
    assert.equal(loadConfig({ IOTCORE_QUEUE_MAX_BYTES: '2GiB' }).queueMaxBytes, 2 * 1024 ** 3)
    assert.equal(loadConfig({ IOTCORE_QUEUE_MAX_BYTES: '10485760' }).queueMaxBytes, 10485760)
  })

  test('the alerts settings: webhook retries for 3 days by default, sizes and seconds as given', () => {
    const d = loadConfig({})
    assert.equal(d.webhookRetryForSeconds, 3 * 86_400)
    assert.equal(d.maxIngestLagSeconds, 300)
    assert.equal(d.minFreeDiskBytes, 1024 ** 3)
    const c = loadConfig({
      IOTCORE_WEBHOOK_RETRY_FOR: '60',
      IOTCORE_MAX_INGEST_LAG: '5',
      IOTCORE_MIN_FREE_DISK: '2GiB',
    })
    assert.deepEqual(
      [c.webhookRetryForSeconds, c.maxIngestLagSeconds, c.minFreeDiskBytes],
      [60, 5, 2 * 1024 ** 3],
    )
  })

  test('roles come from the flag', () => {
    assert.deepEqual(loadConfig({}, { roles: 'gateway,ingest' }).roles, ['gateway', 'ingest'])
  })

  for (const [name, value] of [
    ['IOTCORE_MQTT_PORT', '70000'],
    ['IOTCORE_HTTP_PORT', 'eighty'],
    ['DATABASE_URL', 'mysql://x'],
    ['AMQP_URL', 'not a url'],
    ['CLOUDAMQP_URL', 'http://x'],
    ['IOTCORE_QUEUE_MAX_BYTES', 'lots'],
    ['IOTCORE_OFFLINE_AFTER', '-1'],
    ['IOTCORE_LOG_LEVEL', 'loud'],
    ['IOTCORE_ADMIN_TOKEN', 'short'],
    ['IOTCORE_MAP_TILES', 'https://tiles.example.org/tile.png'],
    ['IOTCORE_WEBHOOK_RETRY_FOR', '0'],
    ['IOTCORE_MAX_INGEST_LAG', 'soon'],
    ['IOTCORE_MIN_FREE_DISK', '10kB'],
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

  test('TLS: off by default; with a certificate and key, MQTTS on 8883 unless set or off; paths are absolute', () => {
    const none = loadConfig({})
    assert.deepEqual(
      [none.tlsCert, none.tlsKey, none.tlsCa, none.mqttsPort],
      [undefined, undefined, undefined, null],
    )
    assert.equal(loadConfig({ IOTCORE_MQTTS_PORT: 'off' }).mqttsPort, null)
    const pair = { IOTCORE_TLS_CERT: 'certs/fullchain.pem', IOTCORE_TLS_KEY: '/etc/tls/privkey.pem' }
    const c = loadConfig(pair)
    assert.equal(c.tlsCert, resolve('certs/fullchain.pem'))
    assert.equal(c.tlsKey, '/etc/tls/privkey.pem')
    assert.equal(c.mqttsPort, 8883)
    assert.equal(loadConfig({ ...pair, IOTCORE_MQTTS_PORT: '9883' }).mqttsPort, 9883)
    assert.equal(loadConfig({ ...pair, IOTCORE_MQTTS_PORT: 'off' }).mqttsPort, null)
    assert.equal(loadConfig({ ...pair, IOTCORE_TLS_CA: '/etc/tls/ca.pem' }).tlsCa, '/etc/tls/ca.pem')
  })

  for (const [env, variable, why] of [
    [{ IOTCORE_TLS_CERT: '/c.pem' }, 'IOTCORE_TLS_KEY', /IOTCORE_TLS_CERT is set/],
    [{ IOTCORE_TLS_KEY: '/k.pem' }, 'IOTCORE_TLS_CERT', /IOTCORE_TLS_KEY is set/],
    [{ IOTCORE_TLS_CA: '/ca.pem' }, 'IOTCORE_TLS_CERT', /IOTCORE_TLS_CA is set/],
    [{ IOTCORE_MQTTS_PORT: '8883' }, 'IOTCORE_TLS_CERT', /IOTCORE_MQTTS_PORT=8883 is set/],
    [
      { IOTCORE_TLS_CERT: '/c.pem', IOTCORE_TLS_KEY: '/k.pem', IOTCORE_MQTTS_PORT: 'tls' },
      'IOTCORE_MQTTS_PORT',
      /port/,
    ],
  ] as const) {
    test(`TLS settings that make no sense alone fail at start: ${Object.keys(env).join(' + ')}`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) =>
          err instanceof IotError &&
          err.code === 'IOT_ERR_CONFIG_INVALID' &&
          err.message.includes(variable) &&
          why.test(err.message),
      )
    })
  }

  test('an unknown role fails', () => {
    assert.throws(() => loadConfig({}, { roles: 'api,web' }), /--roles/)
  })
})
