import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type TLSSocket, connect, createServer } from 'node:tls'
import pino from 'pino'
import { isIotError } from '../../src/errors.js'
import { Certificates, type TlsFiles, clientCertificate } from '../../src/lib/tls.js'
import { waitFor } from '../helpers/index.js'
import { type KeyPair, Pki, servedSerial } from '../helpers/pki.js'

/** A logger whose lines a test reads back. */
function recorder(): { log: pino.Logger; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = []
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) })
  return { log, lines }
}

/**
 * Certificates from the files `f`, started, behind a TLS echo server that tracks them: `run` gets the server's
 * port and the certificates; both are stopped after it, however it ends.
 */
async function echoServer(
  f: TlsFiles,
  log: pino.Logger,
  run: (port: number, certs: Certificates) => Promise<void>,
): Promise<void> {
  const certs = new Certificates(f, log)
  await certs.start()
  const server = createServer(certs.serverOptions(), (s) => s.pipe(s))
  certs.track(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  try {
    await run(portOf(server), certs)
  } finally {
    server.close()
    await certs.stop()
  }
}

function portOf(server: { address(): unknown }): number {
  return (server.address() as AddressInfo).port
}

/** Sends `text` on an open TLS connection and resolves with the echo. */
function echo(s: TLSSocket, text: string): Promise<string> {
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()))
    s.write(text)
  })
}

describe('TLS certificates: loaded, checked, renewed in place', () => {
  const pki = new Pki()
  let ca: KeyPair
  let first: KeyPair & { serial: string }
  let second: KeyPair & { serial: string }

  before(() => {
    ca = pki.ca()
    first = pki.issue(ca, 'first.example', 'server')
    second = pki.issue(ca, 'second.example', 'server')
  })
  after(() => pki.remove())

  /** The certificate and key files a test owns, starting as copies of `first`. */
  function files(name: string, ca?: string): TlsFiles {
    const dir = join(pki.dir, name)
    mkdirSync(dir)
    const f = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ...(ca ? { ca } : {}) }
    writeFileSync(f.cert, readFileSync(first.cert))
    writeFileSync(f.key, readFileSync(first.key))
    return f
  }

  test('files that cannot be used fail the start with IOT_ERR_CONFIG_INVALID naming their variable', async () => {
    const other = pki.issue(ca, 'other.example', 'server')
    const garbage = join(pki.dir, 'garbage.pem')
    writeFileSync(garbage, 'not a PEM file\n')
    const cases: Array<[TlsFiles, string, RegExp]> = [
      [
        { cert: join(pki.dir, 'missing.pem'), key: first.key },
        'IOTCORE_TLS_CERT',
        /cannot be read \(ENOENT\)/,
      ],
      [{ cert: garbage, key: first.key }, 'IOTCORE_TLS_CERT', /not a PEM certificate/],
      [{ cert: first.cert, key: garbage }, 'IOTCORE_TLS_KEY', /not an unencrypted PEM private key/],
      [{ cert: first.cert, key: other.key }, 'IOTCORE_TLS_KEY', /not the private key of/],
      [{ cert: first.cert, key: first.key, ca: garbage }, 'IOTCORE_TLS_CA', /holds no PEM certificate/],
    ]
    for (const [f, variable, why] of cases) {
      const certs = new Certificates(f, pino({ level: 'silent' }))
      await assert.rejects(
        certs.start(),
        (err: Error) =>
          isIotError(err, 'IOT_ERR_CONFIG_INVALID') &&
          err.message.includes(variable) &&
          why.test(err.message),
      )
      await certs.stop()
    }
  })

  test('a renewal renamed over the files is served on the next handshake; open connections go on', async () => {
    const f = files('renamed')
    const { log, lines } = recorder()
    await echoServer(f, log, async (port, certs) => {
      assert.equal(await servedSerial(port, ca.cert), first.serial)
      const open = connect({ host: '127.0.0.1', port, ca: readFileSync(ca.cert) })
      await new Promise((r) => open.once('secureConnect', r))
      assert.equal(await echo(open, 'before'), 'before')

      pki.replace(second.cert, f.cert)
      pki.replace(second.key, f.key)
      await waitFor(async () => (await servedSerial(port, ca.cert)) === second.serial, 20_000, 'the renewal')
      assert.equal(certs.health().serial, second.serial)
      assert.match(String(certs.health().subject), /CN=second\.example/)
      assert.equal(certs.health().detail, undefined)
      const reloaded = lines.find((l) => l.msg.includes('reloaded'))
      assert.equal(reloaded?.serial, second.serial)
      assert.equal(reloaded?.was, first.serial)
      // The connection made before the renewal is the same connection, still served.
      assert.equal(await echo(open, 'after'), 'after')
      open.destroy()
    })
  })

  test("certbot's renewal, a symlink in live/ swapped to a new file in archive/, is seen", async () => {
    const live = join(pki.dir, 'live')
    const archive = join(pki.dir, 'archive')
    mkdirSync(live)
    mkdirSync(archive)
    writeFileSync(join(archive, 'fullchain1.pem'), readFileSync(first.cert))
    writeFileSync(join(archive, 'privkey1.pem'), readFileSync(first.key))
    writeFileSync(join(archive, 'fullchain2.pem'), readFileSync(second.cert))
    writeFileSync(join(archive, 'privkey2.pem'), readFileSync(second.key))
    const f = { cert: join(live, 'fullchain.pem'), key: join(live, 'privkey.pem') }
    symlinkSync('../archive/fullchain1.pem', f.cert)
    symlinkSync('../archive/privkey1.pem', f.key)
    await echoServer(f, pino({ level: 'silent' }), async (port) => {
      assert.equal(await servedSerial(port, ca.cert), first.serial)
      // What certbot does to each link: unlink, then link to the new version.
      for (const [link, target] of [
        [f.cert, '../archive/fullchain2.pem'],
        [f.key, '../archive/privkey2.pem'],
      ]) {
        unlinkSync(link)
        symlinkSync(target, link)
      }
      await waitFor(async () => (await servedSerial(port, ca.cert)) === second.serial, 20_000, 'the renewal')
    })
  })

  test('a broken renewal is logged as an error and the certificate in use keeps serving', async () => {
    const f = files('broken')
    const { log, lines } = recorder()
    await echoServer(f, log, async (port, certs) => {
      // A certificate truncated mid-copy.
      writeFileSync(f.cert, readFileSync(second.cert).subarray(0, 100))
      await waitFor(() => certs.health().detail?.includes('IOTCORE_TLS_CERT'), 20_000, 'the failed reload')
      assert.match(String(certs.health().detail), /still serving serial/)
      assert.equal(await servedSerial(port, ca.cert), first.serial)
      const error = lines.find((l) => l.level === 50)
      assert.match(String(error?.why), /IOTCORE_TLS_CERT=.*not a PEM certificate/)
      assert.equal(error?.serving, first.serial)

      // The new certificate with the old key: they do not belong together.
      pki.replace(second.cert, f.cert)
      await waitFor(() => certs.health().detail?.includes('not the private key'), 20_000, 'the key check')
      assert.equal(await servedSerial(port, ca.cert), first.serial)

      // Its key arrives: the pair is good, and served.
      pki.replace(second.key, f.key)
      await waitFor(async () => (await servedSerial(port, ca.cert)) === second.serial, 20_000, 'the fix')
      assert.equal(certs.health().detail, undefined)
    })
  })

  test('client certificates are checked against the CA bundle, which is reloaded with the certificate', async () => {
    const fleet = pki.ca('fleet CA')
    const newFleet = pki.ca('new fleet CA')
    const device = pki.issue(newFleet, 'd1', 'client')
    const f = files('ca', join(pki.dir, 'ca', 'bundle.pem'))
    writeFileSync(f.ca!, readFileSync(fleet.cert))
    const certs = new Certificates(f, pino({ level: 'silent' }))
    await certs.start()
    const server = createServer(certs.serverOptions(true), (s) => {
      s.end(JSON.stringify(clientCertificate(s)))
    })
    certs.track(server, true)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    /** What the server made of the client's certificate, in a new handshake. */
    const seen = (key?: KeyPair) =>
      new Promise<string>((resolve, reject) => {
        const opts = key ? { cert: readFileSync(key.cert), key: readFileSync(key.key) } : {}
        const s = connect({ host: '127.0.0.1', port: portOf(server), ca: readFileSync(ca.cert), ...opts })
        let text = ''
        s.on('data', (d: Buffer) => {
          text += d
        })
        s.on('end', () => resolve(text))
        s.on('error', reject)
      })
    try {
      assert.equal(await seen(), 'null')
      assert.match(await seen(device), /"untrusted":"UNABLE_TO_VERIFY_LEAF_SIGNATURE"/)
      writeFileSync(f.ca!, Buffer.concat([readFileSync(fleet.cert), readFileSync(newFleet.cert)]))
      await waitFor(async () => (await seen(device)) === '{"cn":"d1"}', 20_000, 'the new CA bundle')
    } finally {
      server.close()
      await certs.stop()
    }
  })
})
