/**
 * The names IO elements are stored under. Teltonika documents each device family's elements in its
 * "Teltonika Data Sending Parameters ID" pages (the FMB AVL ID list, e.g.
 * https://wiki.teltonika-gps.com/view/FMB120_Teltonika_Data_Sending_Parameters_ID), by id, size in bytes,
 * type (signed or unsigned), multiplier and unit; cited here as [AVL ID <section>]. A named value is stored in
 * the documented unit (the raw integer times the multiplier); every other element as `io<ID>`, its raw value.
 *
 * Ids mean different things in other families (the FM6 family, some CAN adapters): a name is used only when
 * the element arrives with the size the table documents, and the raw `io<ID>` otherwise, so a same-numbered
 * element of another size is never stored under a wrong name or scale.
 */
import type { Value } from '../../readings/index.js'
import type { IoElement } from './codec.js'

/** How a value's bytes read: unsigned, signed (two's complement), on/off, the bytes in hex, or text. */
type Kind = 'uint' | 'int' | 'bool' | 'hex' | 'text'

interface IoName {
  name: string
  /** The documented size in bytes; 0: variable length (8 Extended's NX elements). */
  size: number
  kind: Kind
  /** The documented multiplier, as a divisor (0.001 is 1000) or a factor; exact where a float's is not. */
  div?: number
  mul?: number
}

const io = (name: string, size: number, kind: Kind = 'uint', scale: { div?: number; mul?: number } = {}) => ({
  name,
  size,
  kind,
  ...scale,
})

// biome-ignore format: a table, one line per element
const TABLE: Array<[number, IoName]> = [
  // [AVL ID Permanent I/O elements]
  [239, io('ignition', 1, 'bool')],
  [240, io('movement', 1, 'bool')],
  [80, io('dataMode', 1)],
  [21, io('gsmSignal', 1)],                                // 0-5
  [200, io('sleepMode', 1)],
  [69, io('gnssStatus', 1)],
  [181, io('pdop', 2, 'uint', { div: 10 })],
  [182, io('hdop', 2, 'uint', { div: 10 })],
  [66, io('externalVoltage', 2, 'uint', { div: 1000 })],   // V
  [24, io('gnssSpeed', 2)],                                // km/h
  [206, io('gsmAreaCode', 2)],
  [67, io('batteryVoltage', 2, 'uint', { div: 1000 })],    // V
  [68, io('batteryCurrent', 2, 'uint', { div: 1000 })],    // A
  [241, io('gsmOperator', 4)],
  [199, io('tripOdometer', 4)],                            // m
  [16, io('totalOdometer', 4)],                            // m
  [1, io('din1', 1, 'bool')],
  [2, io('din2', 1, 'bool')],
  [3, io('din3', 1, 'bool')],
  [4, io('din4', 1, 'bool')],
  [9, io('ain1', 2, 'uint', { div: 1000 })],               // V
  [179, io('dout1', 1, 'bool')],
  [180, io('dout2', 1, 'bool')],
  // The iButton's 8 bytes, in hex as sent; all zeros while none is attached.
  [78, io('iButton', 8, 'hex')],
  // [AVL ID CAN adapters elements] fuel level from the vehicle's CAN bus.
  [84, io('fuelLevelLitres', 2, 'uint', { div: 10 })],     // l
  [89, io('fuelLevelPercent', 1)],                         // %
  // [AVL ID OBD Elements] read by the FMB OBD devices (FMB001, FMB003, FMB010/020 with an OBD dongle).
  [256, io('vin', 0, 'text')],
  [30, io('dtcCount', 1)],
  [31, io('engineLoad', 1)],                               // %
  [32, io('coolantTemperature', 1, 'int')],                // °C
  [33, io('shortFuelTrim', 1, 'int')],                     // %
  [34, io('fuelPressure', 2)],                             // kPa
  [35, io('intakeMap', 1)],                                // kPa
  [36, io('rpm', 2)],
  [37, io('vehicleSpeed', 1)],                             // km/h
  [38, io('timingAdvance', 1, 'int')],                     // °
  [39, io('intakeAirTemperature', 1, 'int')],              // °C
  [40, io('maf', 2, 'uint', { div: 100 })],                // g/s
  [41, io('throttlePosition', 1)],                         // %
  [42, io('runtimeSinceEngineStart', 2)],                  // s
  [43, io('distanceMilOn', 2)],                            // km
  [44, io('relativeFuelRailPressure', 2, 'uint', { div: 10 })], // kPa
  [45, io('directFuelRailPressure', 2, 'uint', { div: 10 })],   // kPa
  [46, io('commandedEgr', 1)],                             // %
  [47, io('egrError', 1, 'int')],                          // %
  [48, io('obdFuelLevel', 1)],                             // %
  [49, io('distanceSinceCodesClear', 2)],                  // km
  [50, io('barometricPressure', 1)],                       // kPa
  [51, io('controlModuleVoltage', 2, 'uint', { div: 1000 })], // V
  [52, io('absoluteLoad', 2)],                             // %
  [53, io('ambientAirTemperature', 1, 'int')],             // °C
  [54, io('timeRunWithMilOn', 2)],                         // min
  [55, io('timeSinceCodesCleared', 2)],                    // min
  [56, io('absoluteFuelRailPressure', 2, 'uint', { mul: 10 })], // kPa
  [57, io('hybridBatteryPackLife', 1)],                    // %
  [58, io('engineOilTemperature', 1, 'int')],              // °C
  [59, io('fuelInjectionTiming', 2, 'int', { div: 100 })], // °
  [60, io('fuelRate', 2, 'uint', { div: 100 })],           // l/h
  [389, io('obdOemTotalMileage', 4)],                      // km
  [390, io('obdOemFuelLevel', 4, 'uint', { div: 10 })],    // l
]

export const IO_NAMES: ReadonlyMap<number, IoName> = new Map(TABLE)

/** The key and value an IO element is stored as (see the file's comment). */
export function ioValue(buf: Uint8Array, el: IoElement): [string, Value] {
  const known = IO_NAMES.get(el.id)
  if (known !== undefined && (known.size === 0 ? el.variable : !el.variable && known.size === el.size)) {
    return [known.name, named(buf, el, known)]
  }
  return [`io${el.id}`, el.variable ? hex(buf, el.at, el.size) : unsigned(buf, el.at, el.size)]
}

function named(buf: Uint8Array, el: IoElement, n: IoName): Value {
  switch (n.kind) {
    case 'bool':
      return unsignedNumber(buf, el.at, el.size) !== 0
    case 'hex':
      return hex(buf, el.at, el.size)
    case 'text':
      return printable(buf, el.at, el.size)
        ? Buffer.from(buf.subarray(el.at, el.at + el.size)).toString('latin1')
        : hex(buf, el.at, el.size)
    case 'int':
      return scale(signed(buf, el.at, el.size), n)
    default:
      return scale(unsignedNumber(buf, el.at, el.size), n)
  }
}

function scale(v: number, n: IoName): number {
  if (n.div !== undefined) return v / n.div
  if (n.mul !== undefined) return v * n.mul
  return v
}

/** An unsigned value of 1, 2, 4 or 8 bytes; one of 8 past 2^53 as its decimal string, which a double would round. */
function unsigned(buf: Uint8Array, at: number, size: number): number | string {
  if (size === 8) {
    const hi = u32(buf, at)
    if (hi > 0x1fffff) return ((BigInt(hi) << 32n) | BigInt(u32(buf, at + 4))).toString()
  }
  return unsignedNumber(buf, at, size)
}

/** An unsigned value as a number (the named ones of 8 bytes are hex, so a number here is exact). */
function unsignedNumber(buf: Uint8Array, at: number, size: number): number {
  switch (size) {
    case 1:
      return buf[at]
    case 2:
      return (buf[at] << 8) | buf[at + 1]
    case 4:
      return u32(buf, at)
    default:
      return u32(buf, at) * 0x100000000 + u32(buf, at + 4)
  }
}

function signed(buf: Uint8Array, at: number, size: number): number {
  switch (size) {
    case 1:
      return buf[at] > 0x7f ? buf[at] - 0x100 : buf[at]
    case 2: {
      const v = (buf[at] << 8) | buf[at + 1]
      return v > 0x7fff ? v - 0x10000 : v
    }
    default:
      return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
  }
}

const u32 = (b: Uint8Array, i: number) => b[i] * 0x1000000 + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3])

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

function hex(buf: Uint8Array, at: number, size: number): string {
  let s = ''
  for (let i = at; i < at + size; i++) s += HEX[buf[i]]
  return s
}

function printable(buf: Uint8Array, at: number, size: number): boolean {
  for (let i = at; i < at + size; i++) if (buf[i] < 0x20 || buf[i] > 0x7e) return false
  return true
}
