/**
 * Teltonika records as readings (CONTRACT.md "Readings"), the JSON the ingest stores: pure functions.
 *
 * Each record has a msgId made of what it is, its timestamp and a hash of its bytes, so that a packet the device
 * sends again after a lost ack (the device resends what was not acknowledged, [TDSP Codec 8 / Communication with
 * server]) dedups to the rows stored the first time.
 */
import type { Value } from '../../readings/index.js'
import type { AvlRecord } from './codec.js'
import { ioValue } from './io-elements.js'

export type ReadingJson = { ts: number; msgId: string } & Record<string, Value>

/**
 * `<ts>-<64-bit hash of the bytes, hex>`: the same bytes at the same time are the same reading. Two different
 * records of one device would have to share their ms timestamp and their hash to be taken for one: with 64 bits,
 * beyond any chance. The hash is not cryptographic (a device can only confuse its own readings, and could as
 * well send wrong ones); a SHA-1 per record cost ten times the rest of the record's decoding.
 */
export function msgIdOf(ts: number, bytes: Uint8Array): string {
  // Two 32-bit multiply-xor lanes over the bytes, each mixed with the other at the end (cyrb53's scheme).
  let a = 0xdeadbeef
  let b = 0x41c6ce57
  for (let i = 0; i < bytes.length; i++) {
    a = Math.imul(a ^ bytes[i], 0x9e3779b1)
    b = Math.imul(b ^ bytes[i], 0x5f356495)
  }
  a = Math.imul(a ^ (a >>> 16), 0x85ebca6b) ^ Math.imul(b ^ (b >>> 13), 0xc2b2ae35)
  b = Math.imul(b ^ (b >>> 16), 0x85ebca6b) ^ Math.imul(a ^ (a >>> 13), 0xc2b2ae35)
  return `${ts}-${hex8(a)}${hex8(b)}`
}

const hex8 = (n: number) => (n >>> 0).toString(16).padStart(8, '0')

/**
 * One AVL record as a reading: `ts` the record's time; the GPS element as `lat`, `lon`, `alt` (m), `heading`
 * (degrees), `speed` (km/h) and `sats`; `priority` and `eventIo` (the IO id that made the record, 0 for none),
 * `generationType` for Codec 16; then every IO element by name ([io-elements.ts]).
 *
 * A record without a fix has no position: [TDSP Codec 8 / GPS element, the note] says that without a GPS fix
 * "Longitude, Latitude and Altitude values are last valid fix, and Angle, Satellites and Speed are 0" (and a
 * device that never had a fix sends 0, 0). Those coordinates are not where the device was at the record's
 * time, so a record with 0 satellites keeps `sats: 0` and its IO values, and leaves out lat, lon, alt, heading
 * and speed; the device's last position stays the one it had.
 */
export function avlReading(buf: Uint8Array, rec: AvlRecord): ReadingJson {
  const r: ReadingJson = { ts: rec.ts, msgId: msgIdOf(rec.ts, buf.subarray(rec.start, rec.end)) }
  if (rec.satellites > 0) {
    r.lat = rec.lat
    r.lon = rec.lon
    r.alt = rec.alt
    r.heading = rec.angle
    r.speed = rec.speed
  }
  r.sats = rec.satellites
  r.priority = rec.priority
  r.eventIo = rec.eventIo
  if (rec.generation !== undefined) r.generationType = rec.generation
  for (const el of rec.io) {
    const [key, value] = ioValue(buf, el)
    r[key] = value
  }
  return r
}

/**
 * A Codec 12 or 13 message as a reading: its text as `response`. Codec 13 carries its time; a Codec 12 message
 * none, so it takes the time it was received.
 */
export function messageReading(text: string, bytes: Uint8Array, ts: number): ReadingJson {
  return { ts, msgId: msgIdOf(ts, bytes), response: text }
}
