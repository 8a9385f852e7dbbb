import assert from 'node:assert/strict'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { MqttClient } from 'mqtt'
import { ADMIN_TOKEN, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import type { Device } from '../../helpers/mqtt-raw.js'
import { createDeviceOverTls, type KeyPair, Pki, httpsJson, servedSerial } from '../../helpers/pki.js'
import { drained, rows } from '../../helpers/stored.js'
import { closed, mosquittoPub, openClient, publish } from './helpers.js'

const telemetry = (d: { id: string }) => `devices/${d.id}/telemetry`

describe('MQTT over TLS (MQTTS, wss) and client certificates', () => {
  const pki = new Pki()
  let ca: KeyPair
  /** The files the platform is configured with; a test renews them in place. */
  let serverFiles: KeyPair
  let p: Platform
  const clients: MqttClient[] = []

  before(async () => {
    ca = pki.ca()
    const server = pki.issue(ca, 'localhost', 'server')
    serverFiles = { cert: join(pki.dir, 'server.pem'), key: join(pki.dir, 'server.key') }
    copyFileSync(server.cert, serverFiles.cert)
    copyFileSync(server.key, serverFiles.key)
    p = await startPlatform({
      IOTCORE_TLS_CERT: serverFiles.cert,
      IOTCORE_TLS_KEY: serverFiles.key,
      IOTCORE_TLS_CA: ca.cert,
      IOTCORE_MQTTS_PORT: '0',
    })
  })
  after(async () => {
    for (const c of clients) c.end(true)
    await p.stop()
    pki.remove()
  })

  const mqtts = () => p.app.mqtt!.tlsPort
  const tlsOpts = (cert?: KeyPair) => ({
    ca: readFileSync(ca.cert),
    ...(cert ? { cert: readFileSync(cert.cert), key: readFileSync(cert.key) } : {}),
  })

  const createDevice = (name: string) => createDeviceOverTls(p.httpPort, ca.cert, { name })

  async function client(url: string, version: 4 | 5, dev: Partial<Device>, opts = {}): Promise<MqttClient> {
    const { client } = await openClient(url, version, dev, opts)
    clients.push(client)
    return client
  }

  /** mosquitto_pub over TLS trusting the test CA, QoS 1, one reading; returns its exit code and stderr. */
  function mosquittoTls(version: 'mqttv311' | 'mqttv5', topic: string, x: number, extra: string[]) {
    return mosquittoPub([
      ...['-h', '127.0.0.1', '-p', String(mqtts()), '--cafile', ca.cert, '-V', version, '-q', '1'],
      ...['-t', topic, '-m', JSON.stringify({ msgId: `m${x}`, x })],
      ...extra,
    ])
  }

  /** The x values stored for the device, once the queue has drained. */
  async function stored(dev: { id: string }): Promise<number[]> {
    await drained(p)
    return (await rows(p, dev.id)).map((r) => r.values.x as number).sort((a, b) => a - b)
  }

  test('mosquitto_pub publishes over TLS with --cafile and the device token, in 3.1.1 and 5', async () => {
    const dev = await createDevice('mosq-password')
    for (const [i, v] of (['mqttv311', 'mqttv5'] as const).entries()) {
      const r = await mosquittoTls(v, telemetry(dev), i + 1, ['-u', dev.id, '-P', dev.token])
      assert.equal(r.code, 0, r.stderr)
    }
    assert.deepEqual(await stored(dev), [1, 2])
  })

  test('with IOTCORE_TLS_CA a client certificate whose CN is the device id needs no password', async () => {
    const dev = await createDevice('mosq-cert')
    const cert = pki.issue(ca, dev.id, 'client')
    const withCert = ['--cert', cert.cert, '--key', cert.key]
    // No username, the id as username, in both versions; and the token still works beside the certificate.
    const runs: Array<[version: 'mqttv311' | 'mqttv5', extra: string[]]> = [
      ['mqttv311', withCert],
      ['mqttv5', withCert],
      ['mqttv311', [...withCert, '-u', dev.id]],
      ['mqttv5', [...withCert, '-u', dev.id]],
      ['mqttv311', [...withCert, '-u', dev.id, '-P', dev.token]],
    ]
    for (const [i, [v, extra]] of runs.entries()) {
      const r = await mosquittoTls(v, telemetry(dev), i + 1, extra)
      assert.equal(r.code, 0, `${v} ${extra.join(' ')}: ${r.stderr}`)
    }
    assert.deepEqual(await stored(dev), [1, 2, 3, 4, 5])
    // With the certificate, a wrong token is still a wrong token.
    const wrong = await mosquittoTls('mqttv311', telemetry(dev), 9, [
      ...withCert,
      '-u',
      dev.id,
      '-P',
      'iot_wrong',
    ])
    assert.notEqual(wrong.code, 0)
    assert.match(wrong.stderr, /bad user ?name or password/i)
    assert.deepEqual(await stored(dev), [1, 2, 3, 4, 5])
  })

  test("a certificate for device A cannot connect or publish as device B, even with B's token", async () => {
    const a = await createDevice('cert-a')
    const b = await createDevice('cert-b')
    const certA = pki.issue(ca, a.id, 'client')
    const withA = ['--cert', certA.cert, '--key', certA.key]
    for (const v of ['mqttv311', 'mqttv5'] as const) {
      for (const as of [
        ['-u', b.id],
        ['-u', b.id, '-P', b.token],
      ]) {
        const r = await mosquittoTls(v, telemetry(b), 1, [...withA, ...as])
        assert.notEqual(r.code, 0)
        assert.match(r.stderr, /not authori[sz]ed/i, `${v} ${as.join(' ')}`)
      }
    }
    // Connected as A by the certificate, B's topic is A's forbidden topic: quarantined as A's, not stored as B's.
    const { client: c } = await openClient(`mqtts://127.0.0.1:${mqtts()}`, 5, {}, tlsOpts(certA))
    clients.push(c)
    const err = await publish(c, telemetry(b), JSON.stringify({ msgId: 'b1', x: 1 }), 1)
    assert.equal(err?.code, 0x87)
    assert.deepEqual(await stored(b), [])
    const q = await httpsJson(p.httpPort, ca.cert, 'GET', `/api/v1/quarantine?deviceId=${a.id}`, {
      token: ADMIN_TOKEN,
    })
    assert.deepEqual(
      q.body.items.map((i: { reason: string }) => i.reason),
      ['forbidden_topic'],
    )
  })

  test('a certificate from another CA, or naming no device, is refused (not authorized), password or not', async () => {
    const dev = await createDevice('untrusted')
    const otherCa = pki.ca('another CA')
    const foreign = pki.issue(otherCa, dev.id, 'client')
    const nobody = pki.issue(ca, 'dnosuchdevice0000', 'client')
    for (const cert of [foreign, nobody]) {
      for (const as of [[], ['-u', dev.id, '-P', dev.token]]) {
        const r = await mosquittoTls('mqttv5', telemetry(dev), 1, [
          '--cert',
          cert.cert,
          '--key',
          cert.key,
          ...as,
        ])
        assert.notEqual(r.code, 0)
        assert.match(r.stderr, /not authori[sz]ed/i)
      }
    }
    await assert.rejects(
      openClient(`mqtts://127.0.0.1:${mqtts()}`, 5, {}, tlsOpts(foreign)),
      (err: { code?: number }) => err.code === 0x87,
    )
    assert.deepEqual(await stored(dev), [])
  })

  test('MQTT.js over mqtts (3.1.1 and 5, token or certificate) and over wss at /mqtt', async () => {
    const dev = await createDevice('mqttjs')
    const cert = pki.issue(ca, dev.id, 'client')
    const url = `mqtts://127.0.0.1:${mqtts()}`
    const wss = `wss://127.0.0.1:${p.httpPort}/mqtt`
    const runs: Array<[string, 4 | 5, Partial<Device>, object]> = [
      [url, 4, dev, tlsOpts()],
      [url, 5, dev, tlsOpts()],
      [url, 4, {}, tlsOpts(cert)],
      [url, 5, {}, tlsOpts(cert)],
      [wss, 4, dev, tlsOpts()],
      [wss, 5, dev, tlsOpts()],
    ]
    for (const [i, [u, version, who, opts]] of runs.entries()) {
      const c = await client(u, version, who, opts)
      assert.equal(
        await publish(c, telemetry(dev), JSON.stringify({ msgId: `j${i}`, x: i + 1 }), 1),
        undefined,
      )
      c.end(true)
    }
    assert.deepEqual(await stored(dev), [1, 2, 3, 4, 5, 6])
    // A client that does not trust the certificate does not get in.
    await assert.rejects(openClient(url, 4, dev, {}))
  })

  test('plain MQTT and MQTTS share one client-id registry: the same client id on the other port takes over', async () => {
    const dev = await createDevice('takeover')
    const plain = await client(`mqtt://127.0.0.1:${p.mqttPort}`, 5, dev, { clientId: 'one' })
    const gone = closed(plain)
    const secure = await client(`mqtts://127.0.0.1:${mqtts()}`, 5, dev, { clientId: 'one', ...tlsOpts() })
    await gone
    assert.equal(await publish(secure, telemetry(dev), JSON.stringify({ msgId: 't1', x: 1 }), 1), undefined)
    assert.deepEqual(await stored(dev), [1])
  })

  test('a device connected by certificate keeps its connection when its token is rotated, and loses it when deleted', async () => {
    const dev = await createDevice('rotate')
    const cert = pki.issue(ca, dev.id, 'client')
    const c = await client(`mqtts://127.0.0.1:${mqtts()}`, 5, {}, tlsOpts(cert))
    const rotated = await httpsJson(p.httpPort, ca.cert, 'POST', `/api/v1/devices/${dev.id}/token`, {
      token: ADMIN_TOKEN,
    })
    assert.equal(rotated.status, 200)
    // The rotation is answered after this process's cache and connections heard it.
    assert.equal(await publish(c, telemetry(dev), JSON.stringify({ msgId: 'r1', x: 1 }), 1), undefined)
    assert.deepEqual(await stored(dev), [1])
    const gone = closed(c)
    const del = await httpsJson(p.httpPort, ca.cert, 'DELETE', `/api/v1/devices/${dev.id}`, {
      token: ADMIN_TOKEN,
    })
    assert.equal(del.status, 204)
    await gone
    // And its certificate no longer connects.
    await assert.rejects(
      openClient(`mqtts://127.0.0.1:${mqtts()}`, 5, {}, tlsOpts(cert)),
      (err: { code?: number }) => err.code === 0x87,
    )
  })

  test('a renewed certificate is served on MQTTS and HTTPS without a restart; a broken renewal keeps it serving', async () => {
    const dev = await createDevice('renewal')
    const renewed = pki.issue(ca, 'localhost-renewed', 'server')
    const ports = [mqtts(), p.httpPort]
    const before = await servedSerial(ports[0], ca.cert)
    assert.notEqual(before, renewed.serial)
    pki.replace(renewed.cert, serverFiles.cert)
    pki.replace(renewed.key, serverFiles.key)
    for (const port of ports)
      await waitFor(async () => (await servedSerial(port, ca.cert)) === renewed.serial, 20_000, 'the renewal')
    const r = await mosquittoTls('mqttv311', telemetry(dev), 1, ['-u', dev.id, '-P', dev.token])
    assert.equal(r.code, 0, r.stderr)

    // A renewal that went wrong (the key of another certificate): logged, shown in /readyz, not served.
    const other = pki.issue(ca, 'localhost-other', 'server')
    pki.replace(other.cert, serverFiles.cert)
    const readiness = async () => (await p.app.readiness()).tls
    await waitFor(
      async () => (await readiness()).detail?.includes('IOTCORE_TLS_KEY'),
      20_000,
      'the failed reload',
    )
    assert.equal((await readiness()).serial, renewed.serial)
    for (const port of ports) assert.equal(await servedSerial(port, ca.cert), renewed.serial)
    const again = await mosquittoTls('mqttv5', telemetry(dev), 2, ['-u', dev.id, '-P', dev.token])
    assert.equal(again.code, 0, again.stderr)
    assert.deepEqual(await stored(dev), [1, 2])
    // Put the good pair back for whatever runs after.
    writeFileSync(serverFiles.cert, readFileSync(renewed.cert))
  })
})

describe('MQTTS without IOTCORE_TLS_CA: no client certificate is asked for', () => {
  const pki = new Pki()
  let ca: KeyPair
  let p: Platform

  before(async () => {
    ca = pki.ca()
    const server = pki.issue(ca, 'localhost', 'server')
    p = await startPlatform({
      IOTCORE_TLS_CERT: server.cert,
      IOTCORE_TLS_KEY: server.key,
      IOTCORE_MQTTS_PORT: '0',
    })
  })
  after(async () => {
    await p.stop()
    pki.remove()
  })

  test('a device with a certificate still needs its token; with it, it publishes', async () => {
    const dev = await createDeviceOverTls(p.httpPort, ca.cert, { name: 'no-ca' })
    const cert = pki.issue(ca, dev.id, 'client')
    const base = ['-h', '127.0.0.1', '-p', String(p.app.mqtt!.tlsPort), '--cafile', ca.cert, '-q', '1']
    const withCert = ['--cert', cert.cert, '--key', cert.key, '-t', telemetry(dev)]
    const refused = await mosquittoPub([...base, ...withCert, '-m', '{"msgId":"n0","x":0}'])
    assert.notEqual(refused.code, 0)
    assert.match(refused.stderr, /bad user ?name or password/i)
    const ok = await mosquittoPub([
      ...base,
      ...withCert,
      '-u',
      dev.id,
      '-P',
      dev.token,
      '-m',
      '{"msgId":"n1","x":1}',
    ])
    assert.equal(ok.code, 0, ok.stderr)
    await drained(p)
    assert.deepEqual(
      (await rows(p, dev.id)).map((r) => r.values.x),
      [1],
    )
  })
})
