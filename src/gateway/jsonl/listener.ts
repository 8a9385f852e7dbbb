import { type Server, type Socket, createServer } from 'node:net'

/**
 * The JSON-lines listener's server, made in this one place so that a TLS server (node:tls, whose sockets are
 * net.Sockets too) can take its place without the gateway changing. Half-open: a sender that ends its side
 * after its last line (`nc -N`) still gets every answer before the close.
 */
export function createListener(onSocket: (socket: Socket) => void): Server {
  return createServer({ noDelay: true, allowHalfOpen: true }, onSocket)
}
