import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { brotliCompressSync, constants, gzipSync } from 'node:zlib'
import { defineConfig, type Plugin } from 'vite'

/** Beside the server module that serves it (src/web/index.ts), inside the package's `files`. */
const OUT = fileURLToPath(new URL('../dist/src/web/console/', import.meta.url))
/** Smaller files gain too little from compression to be worth a second copy. */
const MIN_BYTES = 1024

/**
 * Writes a brotli (.br, best quality) and a gzip (.gz) copy beside each built text file, once at build time,
 * for @fastify/static's preCompressed: no compression work per request.
 */
function precompress(): Plugin {
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((f) =>
      statSync(join(dir, f)).isDirectory() ? walk(join(dir, f)) : [join(dir, f)],
    )
  return {
    name: 'iotcore-precompress',
    apply: 'build',
    closeBundle() {
      for (const file of walk(OUT)) {
        if (!/\.(html|js|css|json|svg|map)$/.test(file)) continue
        const data = readFileSync(file)
        if (data.length < MIN_BYTES) continue
        writeFileSync(
          `${file}.br`,
          brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
        )
        writeFileSync(`${file}.gz`, gzipSync(data, { level: 9 }))
      }
    },
  }
}

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: OUT,
    emptyOutDir: true,
    assetsDir: 'assets',
    // Browsers of the last few years: module scripts, no legacy build.
    target: 'es2022',
    chunkSizeWarningLimit: 600,
  },
  plugins: [precompress()],
})
