/** Mean Earth radius, km (IUGG). */
const EARTH_KM = 6371.0088
const RAD = Math.PI / 180
/** A degree of latitude, or of longitude at the equator (the most a degree of longitude spans), in km. */
export const KM_PER_DEGREE = EARTH_KM * RAD
/** Below this the flat-Earth distance is within 0.1% of the great circle's (and costs one cosine). */
const FLAT_UP_TO_KM = 50

/**
 * Great-circle distance in km between two positions in degrees. Most fixes of a vehicle lie close together:
 * those take the equirectangular approximation, the rest haversine.
 */
export function distanceKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  let dLon = Math.abs(lon2 - lon1)
  // Across the antimeridian: 179.9 to -179.9 is 0.2 degrees, not 359.8.
  if (dLon > 180) dLon = 360 - dLon
  const dLat = (lat2 - lat1) * RAD
  const x = dLon * RAD * Math.cos(((lat1 + lat2) / 2) * RAD)
  const flat = EARTH_KM * Math.sqrt(x * x + dLat * dLat)
  if (flat <= FLAT_UP_TO_KM) return flat
  const a =
    Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.sin((dLon * RAD) / 2) ** 2
  return 2 * EARTH_KM * Math.asin(Math.min(1, Math.sqrt(a)))
}
