import { type Server, type Socket, createServer } from 'node:net'
import { type Server as TlsServer, createServer as createTlsServer } from 'node:tls'
import type { Logger } from 'pino'
import { type Certificates, HANDSHAKE_TIMEOUT_MS } from '../lib/tls.js'

/**
 * [RFC8446-5.1] A TLS record begins with its ContentType, and a client's first record is its ClientHello:
 * handshake(22). TLS 1.0-1.2 clients begin the same way (RFC 5246 §6.2.1). No device protocol served here
 * begins so: a Teltonika IMEI packet starts with 0x00 (the IMEI length's high byte), a JSON line with `{` or
 * whitespace.
 */
const TLS_HANDSHAKE = 0x16

/** What a listener takes: plain TCP, TLS only, or either, told apart per connection. */
export type Accepts = 'plain' | 'tls' | 'plain and tls'

export interface ListenOptions {
  host: string
  port: number
  /**
   * The platform's certificate (`App.tls`, set when IOTCORE_TLS_CERT/KEY are): the listener then takes TLS
   * only (unless `plainToo`), with the certificate renewed in place. Undefined: plain TCP.
   */
  tls?: Certificates
  /**
   * With `tls`: plain TCP too, on the same port. Each connection's first byte tells a TLS ClientHello from a
   * device protocol's first packet, so trackers that cannot do TLS keep working once an operator configures a
   * certificate. For the device protocols, whose clients speak first; MQTTS has a port of its own and does
   * not set it.
   */
  plainToo?: boolean
  /** MQTTS: ask for a client certificate (with IOTCORE_TLS_CA), not require one: lib/tls.ts. */
  clientCertificates?: boolean
  /**
   * Keep a connection writable after the device ends its side (net.Server's allowHalfOpen): JSON lines
   * answers the lines sent before the end. Default: the end closes both sides.
   */
  allowHalfOpen?: boolean
  /** What listens, for the log lines: "MQTT", "Teltonika". */
  name: string
  log: Logger
}

export interface Listener {
  /** The bound port (the configured one, or the one the system chose for 0). */
  readonly port: number
  /** Plain TCP, TLS, or both. */
  readonly accepts: Accepts
  /** Still bound (the service checks watch it). */
  readonly listening: boolean
  /**
   * Stops accepting; resolves once every connection it accepted has closed, so call it, end those
   * connections, then await it.
   */
  close(): Promise<void>
}

/**
 * A TCP listener for a device protocol: plain, TLS, or both as configured. `onConnection` gets each
 * connection as a net.Socket, or a tls.TLSSocket once its handshake is done, so the protocol code is the same
 * either way. Resolves once bound; rejects if the port cannot be bound.
 */
export async function listen(opts: ListenOptions, onConnection: (socket: Socket) => void): Promise<Listener> {
  const { tls, log, name } = opts
  const accepts: Accepts = tls === undefined ? 'plain' : opts.plainToo ? 'plain and tls' : 'tls'
  let secure: TlsServer | undefined
  if (tls) {
    secure = createTlsServer(
      { ...tls.serverOptions(opts.clientCertificates), noDelay: true, allowHalfOpen: opts.allowHalfOpen },
      onConnection,
    )
    tls.track(secure, opts.clientCertificates)
    // Scanners, clients that distrust the certificate, plain TCP sent to a TLS port: the socket is gone
    // already, there is nothing to answer.
    secure.on('tlsClientError', (err, socket) =>
      log.debug({ err: err.message, remote: socket.remoteAddress }, `${name} TLS handshake failed`),
    )
  }
  // Both: the plain server accepts, and hands a connection that begins a TLS handshake to the TLS server,
  // which never binds a port of its own; it does the handshake (with its timeout, and the certificate that
  // `track` keeps current) and gives onConnection the TLS socket.
  const plain = { noDelay: true, allowHalfOpen: opts.allowHalfOpen }
  const server: Server =
    accepts === 'plain'
      ? createServer(plain, onConnection)
      : accepts === 'tls'
        ? secure!
        : createServer(plain, (socket) => sniff(socket, secure!, onConnection, log, name))
  const port = await bind(server, opts.port, opts.host).catch((err) => {
    server.close()
    // Ends the tracking of the TLS server (its 'close').
    if (secure !== server) secure?.close()
    throw err
  })
  server.on('error', (err) => log.error({ err }, `${name} listener error`))
  log.info({ port, accepts }, `${name} listening`)
  return {
    port,
    accepts,
    get listening() {
      return server.listening
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        if (secure !== server) secure?.close()
      }),
  }
}

/**
 * Binds `server` (net, TLS or HTTP) to host:port. Resolves with the bound port (the system's pick for 0);
 * rejects if the port cannot be bound.
 */
export function bind(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve((server.address() as { port: number }).port)
    })
  })
}

/**
 * How long a device listener's stop lets the exchanges under way finish (an answer being written, an append
 * landing, then its answer) before their connections are cut.
 */
export const STOP_GRACE_MS = 2000

/**
 * A listener's stop: awaits `closed` (its close, which resolves once its connections are gone), and after
 * STOP_GRACE_MS calls `cut` to end the connections still open. The timer is cleared and unref()ed.
 */
export async function closeWithin(closed: Promise<void>, cut: () => void): Promise<void> {
  const timer = setTimeout(cut, STOP_GRACE_MS)
  timer.unref()
  try {
    await closed
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Waits for a connection's first read and routes it by its first byte: a TLS handshake record to the TLS
 * server, anything else to `onConnection` as it is, with no stream layer in between. The read is put back
 * (`unshift`) before either sees the socket: the TLS socket feeds what its raw socket has buffered to its
 * handshake (the tests prove no byte is lost on either path). The decision needs one byte, so nothing is held
 * beyond that one read (at most the socket's read buffer). A client silent for the TLS handshake timeout is
 * closed, as a TLS-only listener closes it.
 */
function sniff(
  socket: Socket,
  secure: TlsServer,
  onConnection: (socket: Socket) => void,
  log: Logger,
  name: string,
): void {
  const silent = () => {
    log.debug({ remote: socket.remoteAddress }, `${name} connection sent nothing; closed`)
    socket.destroy()
  }
  const failed = (err: Error) =>
    log.debug({ err: err.message, remote: socket.remoteAddress }, `${name} connection failed`)
  socket.setTimeout(HANDSHAKE_TIMEOUT_MS, silent)
  socket.on('error', failed)
  socket.once('data', (first: Buffer) => {
    socket.setTimeout(0, silent)
    socket.pause()
    socket.unshift(first)
    if (first[0] === TLS_HANDSHAKE) {
      // Errors from here on are the TLS socket's, reported as tlsClientError.
      secure.emit('connection', socket)
      return
    }
    socket.removeListener('error', failed)
    onConnection(socket)
    // Paused above, so that the protocol's 'data' listener gets the first read, in order.
    if (!socket.destroyed) socket.resume()
  })
}
