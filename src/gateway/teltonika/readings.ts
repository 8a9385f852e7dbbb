/**
 * Teltonika records as readings (CONTRACT.md "Readings"), the JSON text the ingest stores: pure functions.
 *
 * Each record has a msgId made of what it is, its timestamp and a hash of its bytes, so that a packet the device
 * sends again after a lost ack (the device resends what was not acknowledged, [TDSP Codec 8 / Communication with
 * server]) dedups to the rows stored the first time.
 *
 * The text is written directly, not built as objects for JSON.stringify: on a packet of tracker records that
 * took a third of the time. Numbers are written as JSON.stringify writes them (String of a finite number is the
 * same text), strings through JSON.stringify.
 */
import { LIMITS } from '../../readings/index.js'
import { TS_MAX, TS_MIN } from '../../readings/time.js'
import type { AvlRecord } from './codec.js'
import { ioValue } from './io-elements.js'

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

/** Readings as a JSON array, and whether the reading rule can be seen to take every one of them (`plain`). */
export interface ReadingsJson {
  json: string
  /**
   * True when every reading is plainly valid by how it was built: its ts in range, lat and lon in range, at most
   * LIMITS.maxValuesPerReading values, no string longer than LIMITS.maxStringLength (the keys, msgIds, numbers,
   * booleans and hex or printable-ASCII strings written here meet the rest of the rule by construction). False
   * means the rule must judge them (readings/index.ts); some may be refused. The fuzz test holds the two to agree.
   */
  plain: boolean
}

/**
 * The records of one AVL packet as readings: `ts` the record's time; the GPS element as `lat`, `lon`, `alt` (m),
 * `heading` (degrees), `speed` (km/h) and `sats`; `priority` and `eventIo` (the IO id that made the record, 0 for
 * none), `generationType` for Codec 16; then every IO element by name (io-elements.ts).
 *
 * A record without a fix has no position: [TDSP Codec 8 / GPS element, the note] says that without a GPS fix
 * "Longitude, Latitude and Altitude values are last valid fix, and Angle, Satellites and Speed are 0" (and a
 * device that never had a fix sends 0, 0). Those coordinates are not where the device was at the record's
 * time, so a record with 0 satellites keeps `sats: 0` and its IO values, and leaves out lat, lon, alt, heading
 * and speed; the device's last position stays the one it had.
 */
export function avlReadings(buf: Uint8Array, records: readonly AvlRecord[]): ReadingsJson {
  let json = '['
  let plain = true
  for (let i = 0; i < records.length; i++) {
    const rec = records[i]
    if (i > 0) json += ','
    const ts = rec.ts
    json += `{"ts":${ts},"msgId":"${msgIdOf(ts, buf.subarray(rec.start, rec.end))}"`
    if (ts < TS_MIN || ts > TS_MAX) plain = false
    let values = 3
    if (rec.satellites > 0) {
      json += `,"lat":${rec.lat},"lon":${rec.lon},"alt":${rec.alt},"heading":${rec.angle},"speed":${rec.speed}`
      values += 5
      if (rec.lat < -90 || rec.lat > 90 || rec.lon < -180 || rec.lon > 180) plain = false
    }
    json += `,"sats":${rec.satellites},"priority":${rec.priority},"eventIo":${rec.eventIo}`
    if (rec.generation !== undefined) {
      json += `,"generationType":${rec.generation}`
      values++
    }
    for (const el of rec.io) {
      const [key, value] = ioValue(buf, el)
      if (typeof value === 'string') {
        json += `,"${key}":${JSON.stringify(value)}`
        if (value.length > LIMITS.maxStringLength) plain = false
      } else json += `,"${key}":${value}`
    }
    if (values + rec.io.length > LIMITS.maxValuesPerReading) plain = false
    json += '}'
  }
  return { json: `${json}]`, plain }
}

/**
 * A Codec 12 or 13 message as a reading: its text as `response`. Codec 13 carries its time; a Codec 12 message
 * none, so it takes the time it was received. Device text can hold anything: the rule judges it.
 */
export function messageReading(text: string, bytes: Uint8Array, ts: number): ReadingsJson {
  return { json: JSON.stringify([{ ts, msgId: msgIdOf(ts, bytes), response: text }]), plain: false }
}
