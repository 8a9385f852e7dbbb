/** An exact decimal factor: `digits` x 10^-`scale`. */
export interface DecimalFactor {
  readonly digits: bigint
  readonly scale: number
}

/** 1 knot is 1 nautical mile (1,852 m, exactly, by definition) an hour: 1.852 km/h exactly. */
export const KNOTS_TO_KMH: DecimalFactor = { digits: 1852n, scale: 3 }
/** 1 m/s is 3,600 m an hour: 3.6 km/h exactly. */
export const MPS_TO_KMH: DecimalFactor = { digits: 36n, scale: 1 }
/** A fraction (0 to 1) as a percentage. */
export const FRACTION_TO_PERCENT: DecimalFactor = { digits: 100n, scale: 0 }

// String(x) of a finite number: an optional sign, digits, an optional fraction, an optional exponent.
const SHORTEST = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/

/**
 * `x` times `factor`, computed on decimals: `x` is taken as the decimal it is written as (String(x), the
 * shortest form that reads back as x, which is what the device sent for any decimal of up to 15 digits), the
 * product is exact, and only the result is rounded, once, to the nearest double. So 10.1 knots is 18.7052 km/h
 * and a battery level of 0.79 is 79 %, where binary floating point gives 18.705199999999998 and
 * 79.00000000000001. `x` must be finite.
 */
export function timesDecimal(x: number, factor: DecimalFactor): number {
  const m = SHORTEST.exec(String(x))!
  const fraction = m[3] ?? ''
  const product = BigInt(m[2] + fraction) * factor.digits
  const exponent = (m[4] === undefined ? 0 : Number(m[4])) - fraction.length - factor.scale
  return Number(`${m[1]}${product}e${exponent}`)
}
