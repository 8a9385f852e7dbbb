/**
 * Throwaway certificates for the TLS tests, made with the openssl command line (Debian's), as an operator
 * would: a CA, a server certificate for 127.0.0.1 / localhost, client certificates whose CN is a device id.
 * And an HTTPS request that trusts such a CA, which fetch cannot be told to do.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:tls'
import { ADMIN_TOKEN, type Device } from './index.js'

export interface KeyPair {
  /** PEM file paths. */
  cert: string
  key: string
}

let serials = 1000

export class Pki {
  readonly dir = mkdtempSync(join(tmpdir(), 'iotcore-pki-'))
  private n = 0

  /** A self-signed CA. */
  ca(cn = 'iotcore test CA'): KeyPair {
    const p = this.paths('ca')
    this.openssl([
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', p.key, '-out', p.cert, '-days', '2', '-subj', `/CN=${cn}`],
      ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'],
    ])
    return p
  }

  /** A certificate for `cn` signed by `ca`: a server's for 127.0.0.1 and localhost, or a client's. */
  issue(ca: KeyPair, cn: string, use: 'server' | 'client'): KeyPair & { serial: string } {
    const p = this.paths(use)
    const csr = `${p.cert}.csr`
    const ext = `${p.cert}.ext`
    const serial = (++serials).toString(16).toUpperCase().padStart(4, '0')
    writeFileSync(
      ext,
      [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature',
        `extendedKeyUsage=${use === 'server' ? 'serverAuth' : 'clientAuth'}`,
        ...(use === 'server' ? ['subjectAltName=IP:127.0.0.1,DNS:localhost'] : []),
      ].join('\n'),
    )
    this.openssl([
      ...['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', p.key, '-out', csr, '-subj', `/CN=${cn}`],
    ])
    this.openssl([
      ...['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${serial}`],
      ...['-days', '1', '-out', p.cert, '-extfile', ext],
    ])
    return { ...p, serial }
  }

  /** Puts `from`'s bytes at `to` the way certbot and editors do: a new file renamed over the old one. */
  replace(from: string, to: string): void {
    const tmp = `${to}.new`
    writeFileSync(tmp, readFileSync(from))
    renameSync(tmp, to)
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true })
  }

  private paths(kind: string): KeyPair {
    const base = join(this.dir, `${kind}-${++this.n}`)
    return { cert: `${base}.pem`, key: `${base}.key` }
  }

  private openssl(args: string[]): void {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  }
}

/**
 * The serial number (upper-case hex, as X509Certificate gives it) of the certificate a TLS server presents in
 * a new handshake, trusting `ca`.
 */
export function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca: readFileSync(ca) }, () => {
      const serial = s.getPeerCertificate().serialNumber
      s.destroy()
      resolve(serial)
    })
    s.once('error', reject)
  })
}

/** An HTTPS request to 127.0.0.1 trusting `ca`; the body as JSON. */
export function httpsJson(
  port: number,
  ca: string,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown } = {},
): Promise<{ status: number; body: any }> {
  const body = opts.body === undefined ? undefined : JSON.stringify(opts.body)
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        ca: readFileSync(ca),
        agent: false,
        headers: {
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString()
          resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined })
        })
      },
    )
    req.once('error', reject)
    req.end(body)
  })
}

/**
 * Registers a device through the admin API over HTTPS, trusting `ca` (with a certificate configured the HTTP port
 * takes TLS only): its id and token. Fails unless the answer is 201.
 */
export async function createDeviceOverTls(
  httpPort: number,
  ca: string,
  body: { name: string; imei?: string },
): Promise<Device> {
  const r = await httpsJson(httpPort, ca, 'POST', '/api/v1/devices', { token: ADMIN_TOKEN, body })
  assert.equal(r.status, 201)
  return { id: r.body.id, token: r.body.token }
}
