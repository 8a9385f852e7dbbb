import type { FastifyInstance } from 'fastify'

/**
 * The landing page at `/`. The live dashboard is its own issue; until then this page says where things are
 * rather than pretending to be one.
 */
export async function web(app: FastifyInstance): Promise<void> {
  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    reply.type('text/html; charset=utf-8')
    return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>iotcore</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem}code{background:#f3f3f3;padding:0 .25rem}</style>
</head><body><h1>iotcore</h1>
<p>The platform is running. The dashboard is not built yet; meanwhile:</p>
<ul>
<li><a href="/docs">/docs</a>: the REST API (OpenAPI), with the admin token as bearer</li>
<li><a href="/readyz">/readyz</a>: each component's state</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
</ul>
<p>Devices publish with MQTT to <code>devices/&lt;id&gt;/telemetry</code> (username: device id, password: token)
or POST to <code>/api/v1/devices/&lt;id&gt;/telemetry</code>.</p></body></html>`
  })
}
