/**
 * `p`, or a rejection with `message` once `ms` have passed, whichever comes first; the timer is cleared either
 * way. `p` itself is not cancelled: callers use it where the work may finish late harmlessly (a batch write the
 * key dedups, a ping, an Idempotency-Key claim).
 */
export function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
