import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { promisify, stripVTControlCharacters } from 'node:util'

const run = promisify(execFile)
const logger = join(new URL('../../', import.meta.url).pathname, 'dist/src/logger.js')
/** A process that logs as the platform does: a component's child logger, fields, an error. */
const program = `
const { createLogger } = await import(${JSON.stringify(logger)})
const log = createLogger('info')
log.child({ component: 'queue' }).info({ depth: 3 }, 'local queue open')
log.debug('below the level')
log.error({ err: new Error('disk gone') }, 'durable append failed')
`
const argv = ['--input-type=module', '-e', program]

describe('logs', () => {
  test('are JSON lines when stdout is not a terminal', async () => {
    const { stdout } = await run(process.execPath, argv)
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    assert.equal(lines.length, 2, 'debug is below the level')
    assert.equal(lines[0].level, 30)
    assert.equal(lines[0].component, 'queue')
    assert.equal(lines[0].depth, 3)
    assert.equal(lines[0].msg, 'local queue open')
    assert.equal(lines[1].level, 50)
    assert.equal(lines[1].err.message, 'disk gone')
  })

  test('are one readable line per event when stdout is a terminal', async () => {
    // `script` (util-linux) runs the process on a pseudo-terminal and copies what it printed.
    const cmd = [process.execPath, ...argv].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ')
    const { stdout } = await run('script', ['-qec', cmd, '/dev/null'])
    const text = stripVTControlCharacters(stdout).replaceAll('\r', '')
    assert.doesNotMatch(text, /"level"/, 'no JSON on a terminal')
    assert.doesNotMatch(text, /below the level/)
    const lines = text.trim().split('\n')
    assert.match(lines[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: queue: local queue open \{"depth":3\}$/)
    assert.match(lines[1], /^\[\d\d:\d\d:\d\d\.\d{3}\] ERROR: durable append failed/)
    assert.match(text, /message": "disk gone"/, 'the error follows, readable')
  })
})
