import { type Server, type Socket, createServer } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import type { Logger } from 'pino'
import type { Certificates } from '../lib/tls.js'

export interface ListenOptions {
  host: string
  port: number
  /**
   * The platform's certificate (`App.tls`, set when IOTCORE_TLS_CERT/KEY are): the listener then takes TLS
   * only, with the certificate renewed in place. Undefined: plain TCP.
   */
  tls?: Certificates
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
  /** True if the listener takes TLS. */
  readonly secure: boolean
  /** Still bound (the service checks watch it). */
  readonly listening: boolean
  /**
   * Stops accepting; resolves once every connection it accepted has closed, so call it, end those
   * connections, then await it.
   */
  close(): Promise<void>
}

/**
 * A TCP listener for a device protocol, plain or TLS as configured. `onConnection` gets each connection as a
 * net.Socket, a tls.TLSSocket once its handshake is done when `tls` is given, so the protocol code is the same
 * either way. Resolves once bound; rejects if the port cannot be bound.
 */
export async function listen(opts: ListenOptions, onConnection: (socket: Socket) => void): Promise<Listener> {
  const { tls, log, name } = opts
  let server: Server
  if (tls) {
    const secure = createTlsServer(
      { ...tls.serverOptions(opts.clientCertificates), noDelay: true, allowHalfOpen: opts.allowHalfOpen },
      onConnection,
    )
    tls.track(secure, opts.clientCertificates)
    // Scanners, clients that distrust the certificate, plain TCP sent to a TLS port: the socket is gone
    // already, there is nothing to answer.
    secure.on('tlsClientError', (err, socket) =>
      log.debug({ err: err.message, remote: socket.remoteAddress }, `${name} TLS handshake failed`),
    )
    server = secure
  } else server = createServer({ noDelay: true, allowHalfOpen: opts.allowHalfOpen }, onConnection)
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      // Emits 'close', which ends the tracking of a TLS server.
      server.close()
      reject(err)
    })
    server.listen(opts.port, opts.host, () => {
      server.removeAllListeners('error')
      resolve()
    })
  })
  server.on('error', (err) => log.error({ err }, `${name} listener error`))
  const port = (server.address() as { port: number }).port
  log.info({ port, tls: tls !== undefined }, `${name} listening`)
  return {
    port,
    secure: tls !== undefined,
    get listening() {
      return server.listening
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}
