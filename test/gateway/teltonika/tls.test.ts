/**
 * Teltonika over TLS: with a certificate configured, the TCP port takes TLS only (gateway/listen.ts), a
 * tracker that trusts the certificate's CA is served as over plain TCP, and UDP stays plain.
 */
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { after, before, test } from 'node:test'
import { ADMIN_TOKEN, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { type KeyPair, Pki, httpsJson } from '../../helpers/pki.js'
import { rows } from '../../helpers/stored.js'
import { DOCS, RawTeltonika, ackHex, hex, imeiFrame } from '../../helpers/teltonika.js'

const pki = new Pki()
let ca: KeyPair
let p: Platform
let port: number

before(async () => {
  ca = pki.ca()
  const server = pki.issue(ca, 'localhost', 'server')
  p = await startPlatform({
    IOTCORE_TLS_CERT: server.cert,
    IOTCORE_TLS_KEY: server.key,
    IOTCORE_MQTTS_PORT: 'off',
    IOTCORE_TELTONIKA_PORT: '0',
  })
  port = p.app.teltonika!.port
})
after(async () => {
  await p.stop()
  pki.remove()
})

/** Registers a tracker through the API, over HTTPS (the HTTP port takes TLS too). */
async function register(name: string, imei: string): Promise<string> {
  const r = await httpsJson(p.httpPort, ca.cert, 'POST', '/api/v1/devices', {
    token: ADMIN_TOKEN,
    body: { name, imei },
  })
  assert.equal(r.status, 201)
  return r.body.id
}

test('a tracker over TLS: the handshake, a packet acked after the append, its readings stored', async () => {
  const imei = '356307042441777'
  const id = await register('tls tracker', imei)
  const dev = await RawTeltonika.openTls(port, ca.cert)
  dev.write(imeiFrame(imei))
  assert.equal((await dev.read(1))[0], 0x01)
  dev.write(hex(DOCS.codec8c))
  assert.equal((await dev.read(4)).toString('hex'), ackHex(2))
  dev.destroy()
  await waitFor(async () => (await rows(p, id)).length === 2)
  const ready = await httpsJson(p.httpPort, ca.cert, 'GET', '/readyz')
  assert.equal(ready.body.components.teltonika.tls, true)
})

test('plain TCP to the TLS port gets no answer to its IMEI', async () => {
  const imei = '356307042441778'
  await register('plain tracker', imei)
  const dev = await RawTeltonika.open(port)
  dev.write(imeiFrame(imei))
  await dev.whenClosed()
  assert.equal(dev.rest().length, 0)
})

test('UDP on the same port number stays plain', async () => {
  await register('udp tracker', DOCS.udpImei)
  const client = createSocket('udp4')
  const reply = new Promise<Buffer>((resolve) => client.once('message', resolve))
  client.send(hex(DOCS.udpCodec8), p.app.teltonika!.udpPort, '127.0.0.1')
  assert.equal((await reply).toString('hex'), DOCS.udpCodec8Ack)
  client.close()
})
