import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import type { Transport } from '../queue/types.js'

/**
 * Why a device listener refused a connection or request before taking a reading from it: the `reason` label of
 * `iotcore_device_refusals_total`. `unknown_device` and `bad_token` are the failed authentications each source
 * address is counted for (RefusedPeers); the others are bad framing, a limit, or a flood already refused.
 */
export const REFUSAL_REASONS = [
  'unknown_device',
  'bad_token',
  'rate_limited',
  'malformed',
  'too_large',
  'timeout',
] as const
export type RefusalReason = (typeof REFUSAL_REASONS)[number]

/**
 * Failed authentications from one address: past `limit` within `windowMs` of its first, its connections are
 * turned away unread until that window ends. A device set up wrong retries every few seconds at most, so the
 * limit lets its refusals be seen (and logged) while a scanner or a guesser, many attempts a second, stops
 * costing a credential lookup and a log line each.
 */
export const PEER_LIMIT = {
  limit: 20,
  windowMs: 60_000,
  /** Addresses tracked at most: a flood from many addresses evicts the oldest first, memory stays bounded. */
  maxTracked: 10_000,
} as const

interface Peer {
  count: number
  since: number
}

/**
 * Refusals by source address, for one device listener. Only failed authentications count: a device whose
 * address is shared (a carrier's NAT) is not shut out by another's malformed packet.
 */
export class RefusedPeers {
  private readonly peers = new Map<string, Peer>()

  constructor(
    private readonly transport: Transport,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: { limit: number; windowMs: number; maxTracked: number } = PEER_LIMIT,
  ) {}

  /** How many addresses are turned away now (for /readyz): one pass over at most maxTracked entries. */
  turnedAway(now = Date.now()): number {
    let n = 0
    for (const p of this.peers.values())
      if (p.count >= this.opts.limit && p.since + this.opts.windowMs > now) n++
    return n
  }

  /**
   * Whether connections from `address` are turned away now; counted as `rate_limited` if so. Seconds until
   * the address may try again, or 0.
   */
  blocked(address: string, now = Date.now()): number {
    const p = this.peers.get(address)
    if (p === undefined) return 0
    const left = p.since + this.opts.windowMs - now
    if (left <= 0) {
      this.peers.delete(address)
      return 0
    }
    if (p.count < this.opts.limit) return 0
    this.metrics.refusals.inc({ transport: this.transport, reason: 'rate_limited' })
    return Math.ceil(left / 1000)
  }

  /**
   * A failed authentication from `address`: counted, logged with what was claimed, and the address shut out for
   * the rest of its window once it reaches the limit (logged once, then silent).
   */
  refuse(address: string, reason: 'unknown_device' | 'bad_token', claimed: string, now = Date.now()): void {
    this.metrics.refusals.inc({ transport: this.transport, reason })
    let p = this.peers.get(address)
    if (p !== undefined && p.since + this.opts.windowMs <= now) {
      this.peers.delete(address)
      p = undefined
    }
    if (p === undefined) {
      p = { count: 0, since: now }
      this.peers.set(address, p)
      if (this.peers.size > this.opts.maxTracked) this.peers.delete(this.peers.keys().next().value!)
    }
    p.count++
    if (p.count < this.opts.limit) {
      this.log.info({ address, reason, claimed: claimed.slice(0, 64), refusals: p.count }, 'device refused')
    } else if (p.count === this.opts.limit) {
      const seconds = Math.ceil((p.since + this.opts.windowMs - now) / 1000)
      this.log.warn(
        { address, refusals: p.count, seconds },
        'too many refused devices from one address; turning it away',
      )
    }
  }

  /** Counts a refusal that is not a failed authentication (bad framing, a limit, a timeout). */
  count(reason: Exclude<RefusalReason, 'unknown_device' | 'bad_token' | 'rate_limited'>): void {
    this.metrics.refusals.inc({ transport: this.transport, reason })
  }
}
