import { X509Certificate, createPrivateKey } from 'node:crypto'
import { type FSWatcher, watch } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import {
  type SecureContextOptions,
  type TLSSocket,
  type Server as TlsServer,
  type TlsOptions,
  createSecureContext,
} from 'node:tls'
import type { Logger } from 'pino'
import { IotError } from '../errors.js'
import type { Component, Health } from './component.js'

/**
 * A burst of file events is one change: certbot replaces four symlinks one after another, an operator copies a
 * certificate and then its key. Reading once the directory has been quiet this long sees them all.
 */
const SETTLE_MS = 300
/**
 * Longest a client may take over its TLS handshake (Node's default is 120 s). A 2G modem needs a few seconds
 * for the round trips; beyond this it is more likely a scanner holding a socket and a file descriptor.
 */
export const HANDSHAKE_TIMEOUT_MS = 30_000

/** The PEM files, as configured (absolute paths). */
export interface TlsFiles {
  /** IOTCORE_TLS_CERT: the certificate, optionally followed by its chain. */
  cert: string
  /** IOTCORE_TLS_KEY: its private key, unencrypted. */
  key: string
  /** IOTCORE_TLS_CA: the CAs that client certificates are checked against (MQTTS). */
  ca?: string
}

/** The files' contents, checked to be usable together, and what the logs and /readyz say of them. */
interface Loaded {
  cert: Buffer
  key: Buffer
  ca: Buffer | undefined
  subject: string
  serial: string
  notAfter: string
}

/**
 * The client certificate an MQTTS client presented: verified against IOTCORE_TLS_CA, its subject's CN (the
 * device id it speaks for), or why it is not trusted.
 */
export type ClientCertificate = { readonly cn: string } | { readonly untrusted: string }

/**
 * The platform's certificate as a component: loaded at start (a file that cannot be used fails the start,
 * naming its variable), then watched. When the files change (certbot renewing, a platform rotating a mounted
 * secret) they are read again, and once the new certificate and key are checked to belong together every TLS
 * server handed to `track` gets them for its next handshakes: connections already open keep theirs, nothing
 * restarts. Files that cannot be used are logged and the certificate in use stays.
 *
 * The directories are watched, not the files: certbot swaps the symlinks in `live/`, Kubernetes renames a
 * directory symlink, editors write a temporary file and rename it over the old one; a watch on the file itself
 * would stay on the replaced inode and see none of it. Each event is checked against the current bytes, so
 * unrelated files in the same directory cost a read and nothing more.
 */
export class Certificates implements Component {
  readonly name = 'tls'
  private current: Loaded | undefined
  /** The servers that serve the certificate, each with whether it checks client certificates. */
  private readonly servers = new Map<TlsServer, boolean>()
  private watchers: FSWatcher[] = []
  private settle: NodeJS.Timeout | undefined
  private reloading = false
  private again = false
  private stopped = false
  /** Why the latest change of the files could not be used, until files that can be are seen. */
  private lastError: string | undefined

  constructor(
    readonly files: TlsFiles,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.current = await load(this.files)
    this.log.info(describe(this.current), 'TLS certificate loaded')
    this.warnIfOutOfDate(this.current)
    const paths = [this.files.cert, this.files.key, this.files.ca].filter((p) => p !== undefined)
    for (const dir of new Set(paths.map((p) => dirname(p)))) {
      // Not persistent: the watch alone never keeps the process up.
      const w = watch(dir, { persistent: false }, () => this.changed())
      w.on('error', (err) =>
        this.log.error({ err, dir }, 'watching the TLS files failed; a renewal there needs a restart'),
      )
      this.watchers.push(w)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.settle) clearTimeout(this.settle)
    for (const w of this.watchers) w.close()
    this.watchers = []
  }

  /**
   * Options for `tls.createServer` / `https.createServer`; pass the server to `track` once created. With
   * `clientCertificates` and a CA bundle configured, a client certificate is asked for, not required: the
   * handshake goes through either way and the application decides (`clientCertificate`), so that a device
   * without one can still use its password, and one with an untrusted one is told why, not cut off mid-handshake.
   */
  serverOptions(clientCertificates = false): TlsOptions {
    const verify = clientCertificates && this.files.ca !== undefined
    return {
      ...contextOptions(this.loaded, verify),
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      ...(verify ? { requestCert: true, rejectUnauthorized: false } : {}),
    }
  }

  /** From now until it closes, the server gets each renewed certificate for its next handshakes. */
  track(server: TlsServer, clientCertificates = false): void {
    this.servers.set(server, clientCertificates && this.files.ca !== undefined)
    server.once('close', () => this.servers.delete(server))
  }

  health(): Health {
    const c = this.current
    if (!c) return { ok: false, detail: 'the certificate is not loaded yet' }
    return {
      ok: true,
      subject: c.subject,
      serial: c.serial,
      notAfter: c.notAfter,
      ...(this.lastError
        ? {
            detail: `the changed TLS files cannot be used, still serving serial ${c.serial}: ${this.lastError}`,
          }
        : {}),
    }
  }

  private get loaded(): Loaded {
    if (!this.current) throw new Error('the TLS certificate is used before it was loaded')
    return this.current
  }

  private changed(): void {
    if (this.stopped) return
    if (this.settle) this.settle.refresh()
    else {
      this.settle = setTimeout(() => this.reload(), SETTLE_MS)
      this.settle.unref()
    }
  }

  /** One reload at a time; a change seen during one is read again after it. */
  private async reload(): Promise<void> {
    this.settle = undefined
    if (this.reloading) {
      this.again = true
      return
    }
    this.reloading = true
    try {
      do {
        this.again = false
        await this.reloadOnce()
      } while (this.again && !this.stopped)
    } finally {
      this.reloading = false
    }
  }

  private async reloadOnce(): Promise<void> {
    let next: Loaded
    try {
      next = await load(this.files)
    } catch (err) {
      this.lastError = (err as Error).message
      this.log.error(
        { why: this.lastError, serving: this.current?.serial },
        'the TLS files changed and cannot be used; the certificate in use stays',
      )
      return
    }
    this.lastError = undefined
    const old = this.loaded
    if (this.stopped || (next.cert.equals(old.cert) && next.key.equals(old.key) && sameCa(next, old))) return
    for (const [server, verify] of this.servers) server.setSecureContext(contextOptions(next, verify))
    this.current = next
    this.log.info({ ...describe(next), was: old.serial }, 'TLS certificate reloaded; new handshakes get it')
    this.warnIfOutOfDate(next)
  }

  private warnIfOutOfDate(c: Loaded): void {
    if (Date.parse(c.notAfter) <= Date.now())
      this.log.warn(
        describe(c),
        'the TLS certificate has expired: clients will refuse it until it is renewed',
      )
  }
}

/**
 * The client certificate of a connection on a server that asked for one (`serverOptions(true)`), or null if
 * the client sent none. Trusted: it chains to IOTCORE_TLS_CA and is within its validity (Node checked both
 * in the handshake), and its subject has exactly one CN.
 */
export function clientCertificate(socket: TLSSocket): ClientCertificate | null {
  const cert = socket.getPeerCertificate()
  if (!cert || Object.keys(cert).length === 0) return null
  if (!socket.authorized) return { untrusted: String(socket.authorizationError ?? 'not verified') }
  const cn: unknown = cert.subject?.CN
  if (typeof cn !== 'string' || cn === '') return { untrusted: 'its subject has no single CN' }
  return { cn }
}

function contextOptions(c: Loaded, verify: boolean): SecureContextOptions {
  return { cert: c.cert, key: c.key, ...(verify && c.ca ? { ca: c.ca } : {}) }
}

function sameCa(a: Loaded, b: Loaded): boolean {
  return a.ca === undefined || b.ca === undefined ? a.ca === b.ca : a.ca.equals(b.ca)
}

function describe(c: Loaded): Record<string, string> {
  return { subject: c.subject, serial: c.serial, notAfter: c.notAfter }
}

function bad(variable: string, path: string, why: string): IotError {
  return new IotError('IOT_ERR_CONFIG_INVALID', `${variable}=${JSON.stringify(path)}: ${why}`)
}

async function read(variable: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw bad(variable, path, `cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`)
  }
}

/** A certificate's PEM block. */
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/**
 * Reads the files and checks them the way a handshake would use them: a certificate (Node reads the first
 * of a chain as the server's own), an unencrypted private key that is that certificate's, CA certificates.
 * Throws IOT_ERR_CONFIG_INVALID naming the variable whose file is wrong.
 */
async function load(files: TlsFiles): Promise<Loaded> {
  const [cert, key, ca] = await Promise.all([
    read('IOTCORE_TLS_CERT', files.cert),
    read('IOTCORE_TLS_KEY', files.key),
    files.ca === undefined ? undefined : read('IOTCORE_TLS_CA', files.ca),
  ])
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (err) {
    throw bad('IOTCORE_TLS_CERT', files.cert, `not a PEM certificate (${(err as Error).message})`)
  }
  let matches: boolean
  try {
    matches = x509.checkPrivateKey(createPrivateKey(key))
  } catch (err) {
    throw bad('IOTCORE_TLS_KEY', files.key, `not an unencrypted PEM private key (${(err as Error).message})`)
  }
  if (!matches) throw bad('IOTCORE_TLS_KEY', files.key, `not the private key of ${files.cert}`)
  if (ca !== undefined) {
    const blocks = ca.toString('latin1').match(PEM_CERT) ?? []
    if (blocks.length === 0) throw bad('IOTCORE_TLS_CA', files.ca!, 'holds no PEM certificate')
    for (const b of blocks) {
      try {
        new X509Certificate(b)
      } catch (err) {
        throw bad(
          'IOTCORE_TLS_CA',
          files.ca!,
          `a certificate in it cannot be read (${(err as Error).message})`,
        )
      }
    }
  }
  try {
    // What the servers will do with them: the chain after the first certificate, and the CAs, parsed too.
    createSecureContext({ cert, key, ...(ca ? { ca } : {}) })
  } catch (err) {
    throw bad('IOTCORE_TLS_CERT', files.cert, `cannot be used with its key (${(err as Error).message})`)
  }
  return {
    cert,
    key,
    ca,
    subject: x509.subject.replace(/\n/g, ', '),
    serial: x509.serialNumber,
    notAfter: new Date(x509.validTo).toISOString(),
  }
}
