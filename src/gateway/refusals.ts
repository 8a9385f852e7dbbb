/**
 * Refused devices (an unknown IMEI, a wrong token, a handshake that is not one) counted per source address,
 * and a flood of them cut off, on every device listener (Teltonika, OsmAnd, JSON lines, the signal). Whether a
 * device is refused tells whoever connects whether an IMEI (or an id and token) is registered; an address that
 * keeps guessing is closed at once, before its next attempt is read, until its window passes, so guessing the
 * fleet's IMEIs takes LIMIT guesses a window per address instead of as many as the link carries.
 */
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import type { Transport } from '../queue/types.js'

/** Refusals an address may have in a window before its connections are closed unread. */
export const LIMIT = 20
/**
 * The window's length. A device with a mistyped IMEI retries every few seconds to minutes; 20 refusals a minute
 * never cut off a handful of such devices behind one carrier NAT, while a guesser gets 20 a minute. A
 * registered device behind the same address as a guesser is cut off with it for the rest of the window: the
 * price of not trusting the IMEI an over-limit address sends.
 */
export const WINDOW_MS = 60_000
/** Addresses remembered at most (the oldest window dropped first), so a spray of addresses cannot grow it. */
const MAX_ADDRESSES = 10_000

interface Window {
  count: number
  since: number
}

export class Refusals {
  private readonly byAddress = new Map<string, Window>()
  /** Refusals since start, every address. */
  refused = 0
  /** Connections and datagrams dropped unread because their address was over the limit. */
  limited = 0

  /** How many refusals `address` has in its current window. */
  count(address: string, now = Date.now()): number {
    const w = this.byAddress.get(address)
    return w !== undefined && now - w.since < WINDOW_MS ? w.count : 0
  }

  /** Whether `address` is over the limit now; counts the drop if it is. */
  limit(address: string, now = Date.now()): boolean {
    if (this.count(address, now) < LIMIT) return false
    this.limited++
    return true
  }

  /** Counts a refusal of `address`; true when this one reaches the limit (to be logged once). */
  refuse(address: string, now = Date.now()): boolean {
    this.refused++
    let w = this.byAddress.get(address)
    if (w === undefined || now - w.since >= WINDOW_MS) {
      this.byAddress.delete(address)
      w = { count: 0, since: now }
      this.byAddress.set(address, w)
      if (this.byAddress.size > MAX_ADDRESSES) this.byAddress.delete(this.byAddress.keys().next().value!)
    }
    return ++w.count === LIMIT
  }

  /** Forgets windows that have passed. */
  sweep(now = Date.now()): void {
    for (const [address, w] of this.byAddress) if (now - w.since >= WINDOW_MS) this.byAddress.delete(address)
  }
}

/**
 * Why a device listener refused a connection or request before taking a reading from it: the `reason` label of
 * `iotcore_device_refusals_total`. `unknown_device` and `bad_token` are the refusals counted against their
 * address (Refusals); the others are bad framing, a limit, or an address over its limit.
 */
export type RefusalReason =
  | 'unknown_device'
  | 'bad_token'
  | 'rate_limited'
  | 'malformed'
  | 'too_large'
  | 'timeout'

/**
 * Refusals with what an operator sees of them, for the OsmAnd, JSON-lines and signal listeners: each counted
 * in `iotcore_device_refusals_total` by listener and reason, each failed authentication logged with what was
 * claimed until its address reaches the limit (then once, as it does), and the address's window kept.
 */
export class RefusedPeers {
  private readonly refusals = new Refusals()

  constructor(
    private readonly transport: Transport,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** For /readyz: refusals since start, and connections or requests turned away for an address's flood. */
  health(): { refused: number; limited: number } {
    return { refused: this.refusals.refused, limited: this.refusals.limited }
  }

  /** Whether `address` is over its limit now: then it is turned away unread, and that is counted. */
  limit(address: string): boolean {
    if (!this.refusals.limit(address)) return false
    this.metrics.refusals.inc({ transport: this.transport, reason: 'rate_limited' })
    return true
  }

  /** A failed authentication from `address` (`claimed`: the IMEI or device id it gave). */
  refuse(address: string, reason: 'unknown_device' | 'bad_token', claimed: string): void {
    this.metrics.refusals.inc({ transport: this.transport, reason })
    if (this.refusals.refuse(address))
      this.log.warn(
        { address, windowSeconds: WINDOW_MS / 1000 },
        'refusals from this address reached the limit: it is turned away unread for the rest of the window',
      )
    else if (this.refusals.count(address) < LIMIT)
      this.log.info({ address, reason, claimed: claimed.slice(0, 64) }, 'device refused')
  }

  /** Counts a refusal that is not a failed authentication (bad framing, a limit, a timeout). */
  count(reason: 'malformed' | 'too_large' | 'timeout'): void {
    this.metrics.refusals.inc({ transport: this.transport, reason })
  }

  /** Forgets windows that have passed (from a listener's sweep). */
  sweep(): void {
    this.refusals.sweep()
  }
}
