import mqtt from 'mqtt-packet'
import type { Connection } from './connection.js'
import { handlePacket } from './handlers/index.js'

/**
 * One mqtt-packet parser for every connection, where one per socket would cost each of 10,000s of idle
 * connections its own parser state. It works because packets are framed first (framing.ts): each call hands
 * it whole packets of one connection, and the handlers run synchronously inside it.
 */
export class SharedParser {
  private parser = this.create()
  private failed = false
  private current: Connection | undefined

  /** Parses whole packets of `c` and hands each to its handler. */
  parse(c: Connection, data: Buffer): void {
    this.current = c
    ;(this.parser as unknown as { settings: { protocolVersion: number } }).settings.protocolVersion =
      c.version || 4
    let left = -1
    try {
      left = this.parser.parse(data)
    } finally {
      this.current = undefined
      // Whole frames leave the parser empty. After a malformed packet (or a handler that threw) it still holds
      // that packet's bytes and read offset (mqtt-packet's reset keeps `_pos`), which would shift or glue the
      // next connection's packets onto this one's: start a fresh parser instead.
      if (left !== 0 || this.failed) this.parser = this.create()
    }
  }

  private create(): ReturnType<typeof mqtt.parser> {
    this.failed = false
    const parser = mqtt.parser({ protocolVersion: 4 })
    parser.on('packet', (p: mqtt.Packet) => {
      if (this.current) handlePacket(this.current, p)
    })
    parser.on('error', (err: Error) => {
      this.failed = true
      this.current?.onParseError(err)
    })
    return parser
  }
}
