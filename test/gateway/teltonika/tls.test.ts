/**
 * Teltonika over TLS: with a certificate configured, the TCP port takes TLS and plain TCP (gateway/listen.ts
 * tells them apart by the first byte), a tracker that trusts the certificate's CA is served as over plain TCP,
 * one that cannot do TLS goes on as before, and UDP stays plain.
 */
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { after, before, test } from 'node:test'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { createDeviceOverTls, type KeyPair, Pki, httpsJson } from '../../helpers/pki.js'
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
const register = async (name: string, imei: string) =>
  (await createDeviceOverTls(p.httpPort, ca.cert, { name, imei })).id

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
  assert.equal(ready.body.components.teltonika.tls, 'plain and tls')
})

test('one port, a certificate configured: a tracker over plain TCP and one over TLS both get 01 and their acks', async () => {
  const plainImei = '356307042441778'
  const tlsImei = '356307042441779'
  const plainId = await register('plain tracker', plainImei)
  const tlsId = await register('tls tracker 2', tlsImei)
  const plain = await RawTeltonika.open(port)
  const secure = await RawTeltonika.openTls(port, ca.cert)
  // The IMEI and a packet in one write: the first read holds both, and neither may be lost.
  for (const dev of [plain, secure]) {
    const imei = dev === plain ? plainImei : tlsImei
    dev.write(Buffer.concat([imeiFrame(imei), hex(DOCS.codec8c)]))
  }
  for (const dev of [plain, secure]) {
    assert.equal((await dev.read(1))[0], 0x01)
    assert.equal((await dev.read(4)).toString('hex'), ackHex(2))
    dev.write(hex(DOCS.codec8e))
    assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
    dev.destroy()
  }
  await waitFor(async () => (await rows(p, plainId)).length === 3 && (await rows(p, tlsId)).length === 3)
})

test('UDP on the same port number stays plain', async () => {
  await register('udp tracker', DOCS.udpImei)
  const client = createSocket('udp4')
  const reply = new Promise<Buffer>((resolve) => client.once('message', resolve))
  client.send(hex(DOCS.udpCodec8), p.app.teltonika!.udpPort, '127.0.0.1')
  assert.equal((await reply).toString('hex'), DOCS.udpCodec8Ack)
  client.close()
})
