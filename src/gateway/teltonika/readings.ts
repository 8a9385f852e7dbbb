/**
 * Teltonika records as readings (CONTRACT.md "Readings"), the JSON the ingest stores: pure functions.
 *
 * Each record has a msgId made of what it is, its timestamp and a hash of its bytes, so that a packet the device
 * sends again after a lost ack (the device resends what was not acknowledged, [TDSP Codec 8 / Communication with
 * server]) dedups to the rows stored the first time.
 */
import { createHash } from 'node:crypto'
import type { Value } from '../../readings/index.js'
import type { AvlRecord } from './codec.js'
import { ioValue } from './io-elements.js'

export type ReadingJson = { ts: number; msgId: string } & Record<string, Value>

/** Characters of the base64url SHA-1 kept in a msgId: 96 bits, beyond any chance of two records colliding. */
const HASH_CHARS = 16

/** `<ts>-<hash of the bytes>`: the same bytes at the same time are the same reading. */
export function msgIdOf(ts: number, bytes: Uint8Array): string {
  return `${ts}-${createHash('sha1').update(bytes).digest('base64url').slice(0, HASH_CHARS)}`
}

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
