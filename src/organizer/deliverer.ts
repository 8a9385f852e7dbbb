import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'
import { jitteredPause } from '../lib/backoff.js'
import type { Metrics } from '../metrics/index.js'
import type { Attempt, DueDelivery, Store } from '../store/index.js'

/** A receiver that has not answered by then has failed this attempt. */
const TIMEOUT_MS = 10_000
/** A claimed delivery is nobody else's this long: past any attempt (the timeout), and retried after it if its
 * deliverer died mid-attempt. */
const LEASE_SECONDS = 60
/** Deliveries sent at once; they are each the head of a different (webhook, alert), so order is kept. */
const BATCH = 16
/** Batches per round, so that a long backlog does not hold a round (and the organizer's stop) for long. */
const MAX_BATCHES = 50
/** Retries: from 1 s, doubling, to one an hour, with full jitter, until the retry period ends. */
const RETRY_MIN_MS = 1000
const RETRY_MAX_MS = 3_600_000

/**
 * The Stripe-style signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, one v1 per
 * secret (two during a rotation), so a receiver checks the body and the time with the secret it has.
 */
export function signature(secrets: readonly string[], t: number, body: string): string {
  const signed = `${t}.${body}`
  return [`t=${t}`, ...secrets.map((s) => `v1=${createHmac('sha256', s).update(signed).digest('hex')}`)].join(
    ',',
  )
}

/**
 * Sends the outbox's webhook deliveries: POSTs each event as JSON, signed, with its event id in
 * `Iotcore-Event-Id`. A 2xx delivers it; anything else (another status, a refused connection, no answer in
 * time) is an attempt, recorded with what happened, and the delivery is due again after a jittered backoff,
 * until the retry period (IOTCORE_WEBHOOK_RETRY_FOR) is over and it is given up. The organizer's leader runs
 * it, so one process sends; a delivery is leased while it is sent, so even two leaders (one losing the lock
 * mid-round) do not send it twice at once. Receivers dedupe by event id all the same: a receiver that
 * processed a request and timed out answering gets it again.
 */
export class Deliverer {
  private readonly stopping = new AbortController()

  constructor(
    private readonly store: Store,
    private readonly retryForSeconds: number,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** Sends what is due until nothing is (or a round's share is sent). */
  async round(): Promise<void> {
    for (let i = 0; i < MAX_BATCHES && !this.stopping.signal.aborted; i++) {
      const due = await this.store.webhooks.claimDue(BATCH, LEASE_SECONDS)
      if (due.length === 0) return
      const delivered = await Promise.all(due.map((d) => this.deliver(d)))
      // A receiver that answered is up: its deliveries waiting out a backoff are sent now.
      await this.store.webhooks.hurry([
        ...new Set(due.filter((_, j) => delivered[j]).map((d) => d.webhookId)),
      ])
    }
  }

  /** Aborts the attempts under way; their leases run out and they are sent again (by whoever leads then). */
  stop(): void {
    this.stopping.abort()
  }

  private async deliver(d: DueDelivery): Promise<boolean> {
    const body = JSON.stringify(d.event)
    const started = performance.now()
    let attempt: Attempt
    try {
      const res = await fetch(d.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'iotcore-webhooks',
          'iotcore-event-id': d.event.id,
          'iotcore-event-type': d.event.type,
          'iotcore-signature': signature(d.secrets, Math.floor(Date.now() / 1000), body),
        },
        body,
        // A redirect is not followed: the signature is for the URL registered, and a 3xx is no delivery.
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(TIMEOUT_MS), this.stopping.signal]),
      })
      await res.body?.cancel()
      const delivered = res.status >= 200 && res.status < 300
      attempt = {
        delivered,
        statusCode: res.status,
        error: delivered ? null : `answered HTTP ${res.status}`,
        durationMs: performance.now() - started,
      }
    } catch (err) {
      if (this.stopping.signal.aborted) return false
      attempt = {
        delivered: false,
        statusCode: null,
        error: why(err),
        durationMs: performance.now() - started,
      }
    }
    const retryIn = jitteredPause(RETRY_MIN_MS, RETRY_MAX_MS, d.attempts + 1)
    const status = await this.store.webhooks.recordAttempt(d.id, attempt, retryIn, this.retryForSeconds)
    const result = status === 'delivered' ? 'delivered' : status === 'failed' ? 'gave_up' : 'retry'
    this.metrics.webhookAttempts.inc({ result })
    if (status === 'failed')
      this.log.warn(
        {
          webhook: d.webhookId,
          delivery: d.id,
          event: d.event.id,
          attempts: d.attempts + 1,
          error: attempt.error,
        },
        'webhook delivery given up',
      )
    return attempt.delivered
  }
}

/** What went wrong with a request, in a line: undici's "fetch failed" hides the reason in its cause. */
function why(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } }
  if (e.name === 'TimeoutError') return `no answer within ${TIMEOUT_MS / 1000} s`
  const cause = e.cause?.code ?? e.cause?.message
  return cause ? `${e.message}: ${cause}` : e.message
}
