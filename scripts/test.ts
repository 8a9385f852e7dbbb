/**
 * `npm test`: starts one real PostgreSQL server (the embedded package's binaries, a separate server each
 * test file gets its own database on), runs every compiled test file with node's test runner, stops it.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { EmbeddedDatabase } from '../src/store/embedded.js'

function find(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...find(p))
    else if (name.endsWith('.test.js')) out.push(p)
  }
  return out.sort()
}

const root = new URL('..', import.meta.url).pathname
const only = process.argv.slice(2)
const files = only.length ? only : find(join(root, 'test'))
const dir = mkdtempSync(join(tmpdir(), 'iotcore-test-pg-'))
const pg = new EmbeddedDatabase(dir, pino({ level: 'warn' }))
const url = await pg.start()
console.log(`test PostgreSQL at ${url.replace(/:[^:@]+@/, ':***@')}`)
const code = await new Promise<number>((resolve) => {
  const child = spawn(
    process.execPath,
    // The timeout is a hang guard, not a budget: the slowest file (test/deploy/dockerfile, two `npm ci`s and a
    // build) needs minutes on a busy 2-core machine.
    ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files],
    {
      stdio: 'inherit',
      env: { ...process.env, IOTCORE_TEST_DATABASE_URL: url },
    },
  )
  child.on('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0)))
})
await pg.stop()
rmSync(dir, { recursive: true, force: true })
process.exit(code)
