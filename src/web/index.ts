import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

/** Where `npm run build` puts the console (web/vite.config.ts): beside this module in dist/. */
const ROOT = fileURLToPath(new URL('./console/', import.meta.url))
/** Vite names every asset by its content's hash: a changed file is a new URL, so each may be kept for good. */
const ASSETS = /\/assets\/[^/]+$/

export interface WebOptions {
  /** IOTCORE_MAP_TILES: the page may load images from its origin. */
  mapTiles?: string
}

/**
 * The web console at `/`: the single-page app built from web/, precompressed (brotli and gzip beside each file)
 * and served with caching headers: hashed assets immutable, index.html revalidated every time.
 */
export async function web(app: FastifyInstance, opts: WebOptions): Promise<void> {
  if (!existsSync(`${ROOT}index.html`)) {
    app.get('/', { schema: { hide: true } }, async (_req, reply) => {
      reply.type('text/html; charset=utf-8')
      return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>iotcore</title></head><body>
<h1>iotcore</h1><p>The console is not built: run <code>npm run build</code> (<code>npm start</code> does).
The REST API is at <a href="/docs">/docs</a>, health at <a href="/readyz">/readyz</a>.</p></body></html>`
    })
    return
  }
  const csp = contentSecurityPolicy(opts.mapTiles)
  await app.register(fastifyStatic, {
    root: ROOT,
    prefix: '/',
    // One route per built file, not a catch-all: unknown paths stay the API's 404.
    wildcard: false,
    preCompressed: true,
    cacheControl: false,
    setHeaders(reply: any, path: string) {
      const immutable = ASSETS.test(path.replaceAll('\\', '/'))
      reply.header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      reply.header('x-content-type-options', 'nosniff')
      if (path.endsWith('.html')) {
        reply.header('content-security-policy', csp)
        reply.header('referrer-policy', 'no-referrer')
      }
    },
  })
}

/**
 * The page holds the admin token: it runs only its own scripts and talks only to its own origin. Leaflet and
 * uPlot set inline styles; map tiles, when configured, are images from their server.
 */
function contentSecurityPolicy(tiles: string | undefined): string {
  // {s} is a subdomain a tile layer rotates through: any of them.
  const tileOrigin = tiles && /^https?:\/\/[^/]+/.exec(tiles)?.[0].replace('{s}', '*')
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    `img-src 'self' data: blob:${tileOrigin ? ` ${tileOrigin}` : ''}`,
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ')
}
