/**
 * JSON lines over TLS: with a certificate configured, the port takes TLS (gateway/listen.ts), and a client that
 * trusts the certificate's CA, `openssl s_client` as the README shows it, is served as over plain TCP; plain
 * TCP on the same port still is too.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { after, before, test } from 'node:test'
import { connect } from 'node:tls'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { createDeviceOverTls, type KeyPair, Pki, httpsJson } from '../../helpers/pki.js'
import { rows } from '../../helpers/stored.js'
import { TcpClient } from '../../helpers/tcp.js'

const pki = new Pki()
let ca: KeyPair
let p: Platform
let port: number
let dev: { id: string; token: string }

before(async () => {
  ca = pki.ca()
  const server = pki.issue(ca, 'localhost', 'server')
  p = await startPlatform({
    IOTCORE_TLS_CERT: server.cert,
    IOTCORE_TLS_KEY: server.key,
    IOTCORE_MQTTS_PORT: 'off',
    IOTCORE_JSONL_PORT: '0',
  })
  port = p.app.jsonl!.port
  dev = await createDeviceOverTls(p.httpPort, ca.cert, { name: 'tls lines' })
})
after(async () => {
  await p.stop()
  pki.remove()
})

test('openssl s_client, typed line by line, is answered line by line and its readings stored', async () => {
  const client = spawn(
    'openssl',
    ['s_client', '-quiet', '-CAfile', ca.cert, '-verify_return_error', '-connect', `127.0.0.1:${port}`],
    { stdio: ['pipe', 'pipe', 'ignore'] },
  )
  let out = ''
  client.stdout.on('data', (d: Buffer) => (out += d))
  try {
    client.stdin.write(`${JSON.stringify({ id: dev.id, token: dev.token })}\n`)
    await waitFor(() => out.includes('\n'), 15_000, 'the answer to the credentials')
    client.stdin.write('{"msgId":"s1","ts":1732330000000,"speed":1}\n')
    await waitFor(() => out.split('\n').length > 2, 15_000, 'the answer to the reading')
    assert.deepEqual(
      out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
      [{ device: dev.id }, { ok: 1 }],
    )
  } finally {
    client.kill()
  }
  await waitFor(async () => (await rows(p, dev.id)).some((r) => r.msgId === 's1'))
  const ready = await httpsJson(p.httpPort, ca.cert, 'GET', '/readyz')
  assert.equal(ready.body.components.jsonl.tls, 'plain and tls')
})

test('a TLS client that ends its side after its last line still gets every answer', async () => {
  const socket = connect({ host: '127.0.0.1', port, ca: readFileSync(ca.cert), servername: 'localhost' })
  let out = ''
  socket.on('data', (d: Buffer) => (out += d))
  const closed = new Promise((r) => socket.on('close', r))
  await new Promise((r) => socket.once('secureConnect', r))
  socket.end(
    `${JSON.stringify({ id: dev.id, token: dev.token })}\n{"msgId":"s2","speed":2}\n{"msgId":"s3","speed":3}`,
  )
  await closed
  assert.deepEqual(
    out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
    [{ device: dev.id }, { ok: 1 }, { ok: 1 }],
  )
})

test('plain TCP on the same port is served too: a line never begins like a TLS handshake', async () => {
  const c = await TcpClient.open(port)
  c.write(`${JSON.stringify({ id: dev.id, token: dev.token })}\n{"msgId":"s4","speed":4}\n`)
  assert.deepEqual(await c.nextLine(), { device: dev.id })
  assert.deepEqual(await c.nextLine(), { ok: 1 })
  c.destroy()
})
