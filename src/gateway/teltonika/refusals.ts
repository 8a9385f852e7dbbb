/**
 * Refused devices (an unknown IMEI, a handshake that is not one) counted per source address, and a flood of
 * them cut off. The IMEI answer tells whoever connects whether an IMEI is registered; an address that keeps
 * guessing is closed at once, before its handshake is read, until its window passes, so guessing the fleet's
 * IMEIs takes LIMIT guesses a window per address instead of as many as the link carries.
 */

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
