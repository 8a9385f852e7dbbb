import type { Server as HttpServer } from 'node:http'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { MqttGateway } from './gateway.js'

/** MQTT over WebSocket at `/mqtt` on the HTTP port ([MQTT-6.0.0-4] subprotocol "mqtt"), same gateway. */
export function attachWebSocket(
  http: HttpServer,
  gateway: MqttGateway,
  maxPayloadBytes: number,
): WebSocketServer {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxPayloadBytes + 1024,
    perMessageDeflate: false,
    handleProtocols: (protocols) =>
      protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false,
  })
  http.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/mqtt') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const stream = createWebSocketStream(ws)
      stream.on('error', () => stream.destroy())
      gateway.accept(stream, 'ws')
    })
  })
  return wss
}
