import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { type Socket, connect as netConnect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { TLSSocket, connect as tlsConnect } from 'node:tls'
import pino from 'pino'
import { listen } from '../../src/gateway/listen.js'
import { Certificates } from '../../src/lib/tls.js'
import { type KeyPair, Pki } from '../helpers/pki.js'

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

describe('listen: a device listener, plain or TLS as configured', () => {
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
      assert.equal(l.secure, false)
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
      assert.equal(l.secure, true)
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
