import type { FastifyInstance } from 'fastify'
import type { Health } from '../lib/component.js'
import type { Metrics } from '../metrics/index.js'
import type { Queue } from '../queue/types.js'

export interface OpsDeps {
  /** Each component's health, by name (see Lifecycle.health). */
  readiness(): Promise<Record<string, Health>>
  metrics: Metrics
  queue: Queue
}

/** The operations routes: /healthz (alive), /readyz (each component's state), /metrics (Prometheus). */
export async function ops(app: FastifyInstance, deps: OpsDeps): Promise<void> {
  const { metrics, queue } = deps
  app.get('/healthz', { schema: { tags: ['operations'], summary: 'Alive' } }, async () => ({ status: 'ok' }))

  app.get(
    '/readyz',
    { schema: { tags: ['operations'], summary: "Each component's state; 503 if any is down" } },
    async (_req, reply) => {
      const components = await deps.readiness()
      const ok = Object.values(components).every((c) => c.ok)
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', components })
    },
  )

  app.get(
    '/metrics',
    { schema: { tags: ['operations'], summary: 'Prometheus metrics' } },
    async (_req, reply) => {
      // The queue's gauges are read when scraped, not kept up to date on the append path.
      const s = queue.stats()
      metrics.queueDepth.set(s.depth)
      metrics.queueOldestAge.set(s.oldestAgeSeconds)
      metrics.queueBytes.set(s.bytes)
      reply.type(metrics.registry.contentType)
      return metrics.registry.metrics()
    },
  )
}
