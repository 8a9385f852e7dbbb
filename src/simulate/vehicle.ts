/**
 * Simulated vehicles for `iotcore simulate`: each drives a closed route of road segments out of a city (out and
 * back), with speed limits per road class, braking before turns, stops at lights, parking with the ignition
 * off, and a refuelling stop when the tank runs low; its OBD-II values follow from that (speed, rpm by gear,
 * fuel, coolant temperature, odometer). Seeded, so a device drives the same way every run.
 */

export interface Segment {
  /** Start, in metres east and north of the route's origin. */
  x: number
  y: number
  /** Degrees clockwise from north, as a heading. */
  bearing: number
  length: number
  /** km/h. */
  limit: number
}

const ROAD_CLASSES = [
  { limit: 30, min: 100, max: 400 },
  { limit: 50, min: 200, max: 1200 },
  { limit: 80, min: 800, max: 3000 },
  { limit: 110, min: 2000, max: 6000 },
] as const

/** A route out of the origin and back the same way: turns at right angles in town, bends on faster roads. */
export function makeRoute(rand: () => number, segments = 12): Segment[] {
  const out: Segment[] = []
  let x = 0
  let y = 0
  let bearing = Math.floor(rand() * 4) * 90
  for (let i = 0; i < segments; i++) {
    const cls =
      ROAD_CLASSES[Math.min(ROAD_CLASSES.length - 1, Math.floor(rand() * rand() * ROAD_CLASSES.length * 1.3))]
    const length = cls.min + rand() * (cls.max - cls.min)
    out.push({ x, y, bearing, length, limit: cls.limit })
    const rad = (bearing * Math.PI) / 180
    x += Math.sin(rad) * length
    y += Math.cos(rad) * length
    bearing = (bearing + (cls.limit <= 50 ? (rand() < 0.5 ? 90 : 270) : (rand() - 0.5) * 60) + 360) % 360
  }
  // Back along the same roads, each segment reversed.
  const back = [...out].reverse().map((s) => {
    const rad = (s.bearing * Math.PI) / 180
    return {
      x: s.x + Math.sin(rad) * s.length,
      y: s.y + Math.cos(rad) * s.length,
      bearing: (s.bearing + 180) % 360,
      length: s.length,
      limit: s.limit,
    }
  })
  return [...out, ...back]
}

export type Activity = 'driving' | 'stopped' | 'parked' | 'refuelling'

const TANK_LITRES = 60
const ACCEL = 2 // m/s²
const BRAKE = 3
const LOW_FUEL = 12 // %
const GEARS = [0, 15, 30, 50, 70, 95, 250] // km/h where each gear starts

export class Vehicle {
  readonly route: Segment[]
  private seg = 0
  private along = 0
  /** m/s */
  private v = 0
  private until = 0
  activity: Activity = 'driving'
  fuel: number
  coolant: number
  odometer: number
  private readonly driver: number

  constructor(
    readonly origin: { lat: number; lon: number },
    private readonly rand: () => number,
  ) {
    this.route = makeRoute(rand)
    this.fuel = 8 + rand() * 92
    this.coolant = 20 + rand() * 70
    this.odometer = 10_000 + rand() * 190_000
    this.driver = 0.85 + rand() * 0.2
  }

  get ignition(): boolean {
    return this.activity === 'driving' || this.activity === 'stopped'
  }

  /** Advances the vehicle by `dt` seconds of its life. */
  step(dt: number): void {
    let left = dt
    // Long gaps (a device that was silent) are taken in slices, so stops and turns still happen on the way.
    while (left > 0) {
      const h = Math.min(left, 1)
      this.tick(h)
      left -= h
    }
  }

  private tick(dt: number): void {
    this.until -= dt
    const running = this.ignition
    // Coolant: towards 90 °C with the engine on (a few minutes), back to 20 °C off (slower).
    this.coolant += ((running ? 90 : 20) - this.coolant) * (1 - Math.exp(-dt / (running ? 180 : 900)))
    if (this.activity !== 'driving') {
      if (this.activity === 'stopped') this.burn(0.8 * (dt / 3600))
      if (this.until > 0) return
      if (this.activity === 'refuelling') this.fuel = 100
      this.activity = 'driving'
    }
    const s = this.route[this.seg]
    const target = (s.limit / 3.6) * this.driver
    const next = this.route[(this.seg + 1) % this.route.length]
    const turn = Math.abs(((next.bearing - s.bearing + 540) % 360) - 180)
    // Slow to ~20 km/h before a sharp turn: the distance needed to brake from here.
    const corner = turn > 30 ? 20 / 3.6 : target
    const toEnd = s.length - this.along
    const brakeDist = (this.v ** 2 - corner ** 2) / (2 * BRAKE)
    const want = toEnd <= Math.max(brakeDist, 0) + 5 ? Math.min(corner, target) : target
    this.v = this.v < want ? Math.min(want, this.v + ACCEL * dt) : Math.max(want, this.v - BRAKE * dt)
    const d = this.v * dt
    this.along += d
    this.odometer += d / 1000
    // Litres per 100 km rises with speed; idling costs per hour.
    const per100 = 5.5 + (this.v * 3.6) ** 2 / 4000
    this.burn((d / 1000) * (per100 / 100) + 0.6 * (dt / 3600))
    if (this.along >= s.length) {
      this.along -= s.length
      this.seg = (this.seg + 1) % this.route.length
      if (this.fuel < LOW_FUEL) this.stop('refuelling', 60 + this.rand() * 120)
      else if (this.seg === 0) this.stop('parked', 120 + this.rand() * 480)
      else if (this.route[this.seg].limit <= 50 && this.rand() < 0.3)
        this.stop('stopped', 10 + this.rand() * 50)
    }
  }

  private stop(activity: Activity, seconds: number): void {
    this.activity = activity
    this.until = seconds
    this.v = 0
  }

  private burn(litres: number): void {
    this.fuel = Math.max(0, this.fuel - (litres / TANK_LITRES) * 100)
  }

  get speed(): number {
    return this.v * 3.6
  }

  get heading(): number {
    return this.route[this.seg].bearing
  }

  get rpm(): number {
    if (!this.ignition) return 0
    const kmh = this.speed
    if (kmh < 1) return 800
    const g = GEARS.findIndex((start, i) => kmh >= start && kmh < GEARS[i + 1])
    const share = (kmh - GEARS[g]) / (GEARS[g + 1] - GEARS[g])
    return Math.min(1400 + share * 1800, 4500)
  }

  get position(): { lat: number; lon: number } {
    const s = this.route[this.seg]
    const rad = (s.bearing * Math.PI) / 180
    const x = s.x + Math.sin(rad) * this.along
    const y = s.y + Math.cos(rad) * this.along
    const lat = this.origin.lat + y / 111_320
    return { lat, lon: this.origin.lon + x / (111_320 * Math.cos((lat * Math.PI) / 180)) }
  }

  /** The OBD-II and position values of now, rounded as a device would send them. */
  values(): Record<string, number | boolean> {
    const p = this.position
    return {
      lat: Math.round(p.lat * 1e6) / 1e6,
      lon: Math.round(p.lon * 1e6) / 1e6,
      speed: Math.round(this.speed * 10) / 10,
      heading: Math.round(this.heading),
      ignition: this.ignition,
      rpm: Math.round(this.rpm),
      fuel: Math.round(this.fuel * 10) / 10,
      coolant: Math.round(this.coolant),
      odometer: Math.round(this.odometer * 10) / 10,
    }
  }
}
