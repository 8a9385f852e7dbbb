import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type Socket, connect as netConnect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { TLSSocket, connect as tlsConnect } from 'node:tls'
import pino from 'pino'
import { listen } from '../../src/gateway/listen.js'
import { Certificates } from '../../src/lib/tls.js'
import { waitFor } from '../helpers/index.js'
import { type KeyPair, Pki, servedSerial } from '../helpers/pki.js'

const log = pino({ level: 'silent' })

/** Writes `bytes`, then resolves with all the peer sent until it closed (or `limit` bytes came). */
function exchange(s: Socket, bytes: Buffer, limit = Number.POSITIVE_INFINITY): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let n = 0
    s.on('data', (d: Buffer) => {
      chunks.push(d)
      n += d.length
      if (n >= limit) {
        s.destroy()
        resolve(Buffer.concat(chunks))
      }
    })
    s.on('error', () => {})
    s.on('close', () => resolve(Buffer.concat(chunks)))
    s.write(bytes)
  })
}

/** Echoes what it reads, and tells whether it was handed a TLS socket. */
function echo(socket: Socket): void {
  socket.write(socket instanceof TLSSocket ? 'tls:' : 'tcp:')
  socket.pipe(socket)
}

describe('listen: a device listener, plain, TLS, or both as configured', () => {
  const pki = new Pki()
  let ca: KeyPair
  let certs: Certificates

  before(async () => {
    ca = pki.ca()
    const server = pki.issue(ca, 'localhost', 'server')
    certs = new Certificates({ cert: server.cert, key: server.key }, log)
    await certs.start()
  })
  after(async () => {
    await certs.stop()
    pki.remove()
  })

  test('without certificates: plain TCP on the bound port', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0, name: 'test', log }, echo)
    try {
      assert.equal(l.accepts, 'plain')
      assert.ok(l.port > 0)
      const got = await exchange(netConnect(l.port, '127.0.0.1'), Buffer.from('ping'), 8)
      assert.equal(got.toString(), 'tcp:ping')
    } finally {
      await l.close()
    }
  })

  test('with certificates: a TLS client trusting the CA is served a TLS socket; plain TCP is not served', async () => {
    const l = await listen({ host: '127.0.0.1', port: 0, name: 'test', log, tls: certs }, echo)
    try {
      assert.equal(l.accepts, 'tls')
      const secure = tlsConnect({ host: '127.0.0.1', port: l.port, ca: readFileSync(ca.cert) })
      assert.equal((await exchange(secure, Buffer.from('ping'), 8)).toString(), 'tls:ping')
      // An MQTT CONNECT sent in the clear is no ClientHello: at most a TLS alert comes back, then the close.
      const connect = Buffer.from('101000044d5154540402003c00046964', 'hex')
      const got = await exchange(netConnect(l.port, '127.0.0.1'), connect)
      assert.ok(got.length === 0 || got[0] === 0x15, `not a TLS alert: ${got.toString('hex')}`)
    } finally {
      await l.close()
    }
  })

  /** Several packets in one write: the first read holds them all (a Teltonika IMEI packet starts 0x00). */
  const burst = Buffer.concat([
    Buffer.from('000f333536333037303432343431303133', 'hex'),
    Buffer.from('{"id":"a","token":"b"}\n{"t":1}\n{"t":2}\n'),
    Buffer.alloc(3000, 0x61),
  ])

  test('with plainToo: one port serves a plain client and a TLS client, each with every byte of its first read', async () => {
    const l = await listen(
      { host: '127.0.0.1', port: 0, name: 'test', log, tls: certs, plainToo: true },
      echo,
    )
    try {
      assert.equal(l.accepts, 'plain and tls')
      const plain = await exchange(netConnect(l.port, '127.0.0.1'), burst, 4 + burst.length)
      assert.deepEqual(plain, Buffer.concat([Buffer.from('tcp:'), burst]))
      // The ClientHello is the TLS client's first read: the handshake completes only if none of it was lost.
      const secure = tlsConnect({ host: '127.0.0.1', port: l.port, ca: readFileSync(ca.cert) })
      const got = await exchange(secure, burst, 4 + burst.length)
      assert.deepEqual(got, Buffer.concat([Buffer.from('tls:'), burst]))
      // A JSON line, whitespace first.
      const line = Buffer.from(' {"id":"x"}\n')
      assert.equal(
        (await exchange(netConnect(l.port, '127.0.0.1'), line, 4 + line.length)).toString(),
        `tcp:${line}`,
      )
    } finally {
      await l.close()
    }
  })

  test('with plainToo: a renewed certificate is served to the next TLS connection', async () => {
    const first = pki.issue(ca, 'localhost', 'server')
    const second = pki.issue(ca, 'localhost', 'server')
    const dir = join(pki.dir, 'renewed')
    mkdirSync(dir)
    const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }
    writeFileSync(files.cert, readFileSync(first.cert))
    writeFileSync(files.key, readFileSync(first.key))
    const renewing = new Certificates(files, log)
    await renewing.start()
    const l = await listen(
      { host: '127.0.0.1', port: 0, name: 'test', log, tls: renewing, plainToo: true },
      echo,
    )
    try {
      assert.equal(await servedSerial(l.port, ca.cert), first.serial)
      pki.replace(second.cert, files.cert)
      pki.replace(second.key, files.key)
      await waitFor(
        async () => (await servedSerial(l.port, ca.cert)) === second.serial,
        20_000,
        'the renewal',
      )
      const got = await exchange(netConnect(l.port, '127.0.0.1'), burst, 4 + burst.length)
      assert.equal(got.subarray(0, 4).toString(), 'tcp:')
    } finally {
      await l.close()
      await renewing.stop()
    }
  })

  test('with plainToo: a client that closes before sending anything leaves the listener serving', async () => {
    const l = await listen(
      { host: '127.0.0.1', port: 0, name: 'test', log, tls: certs, plainToo: true },
      echo,
    )
    try {
      const quiet = netConnect(l.port, '127.0.0.1')
      await new Promise((r) => quiet.once('connect', r))
      quiet.destroy()
      assert.equal(
        (await exchange(netConnect(l.port, '127.0.0.1'), Buffer.from('\x00x'), 6)).toString(),
        'tcp:\x00x',
      )
      assert.equal(await servedSerial(l.port, ca.cert), String(certs.health().serial))
    } finally {
      await l.close()
    }
  })

  test('a port in use is an error of the start, and close resolves once the listener is gone', async () => {
    const a = await listen({ host: '127.0.0.1', port: 0, name: 'a', log, tls: certs }, echo)
    await assert.rejects(
      listen({ host: '127.0.0.1', port: a.port, name: 'b', log, tls: certs }, echo),
      (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE',
    )
    await a.close()
    const again = await listen({ host: '127.0.0.1', port: a.port, name: 'a', log }, echo)
    assert.equal(again.port, a.port)
    await again.close()
  })
})
