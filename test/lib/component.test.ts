import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import pino from 'pino'
import { type Component, Lifecycle, builtAtStart } from '../../src/lib/component.js'

/** A component that writes what happens to it into `events`. */
function part(
  name: string,
  events: string[],
  opts: { failStart?: boolean; failStop?: boolean; health?: () => unknown } = {},
): Component {
  return {
    name,
    async start() {
      events.push(`start ${name}`)
      if (opts.failStart) throw new Error(`${name} cannot start`)
    },
    async stop() {
      events.push(`stop ${name}`)
      if (opts.failStop) throw new Error(`${name} cannot stop`)
    },
    ...(opts.health ? { health: opts.health as Component['health'] } : {}),
  }
}

const silent = pino({ level: 'silent' })

describe('component lifecycle', () => {
  test('components start in order and stop in reverse, once', async () => {
    const events: string[] = []
    const l = new Lifecycle([part('a', events), part('b', events), part('c', events)], silent)
    await l.start()
    await Promise.all([l.stop(), l.stop()])
    await l.stop()
    assert.deepEqual(events, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a'])
  })

  test('a start that fails half-way stops what it entered, in reverse, starts nothing after it and throws its error', async () => {
    const events: string[] = []
    const l = new Lifecycle(
      [part('a', events), part('b', events), part('c', events, { failStart: true }), part('d', events)],
      silent,
    )
    await assert.rejects(l.start(), /c cannot start/)
    assert.deepEqual(events, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a'])
  })

  test('a component that fails to stop is logged and the others still stop', async () => {
    const events: string[] = []
    const lines: string[] = []
    const log = pino({ level: 'error' }, { write: (s: string) => lines.push(s) })
    const l = new Lifecycle(
      [part('a', events), part('b', events, { failStop: true }), part('c', events)],
      log,
    )
    await l.start()
    await l.stop()
    assert.deepEqual(events.slice(3), ['stop c', 'stop b', 'stop a'])
    assert.equal(lines.length, 1)
    assert.match(lines[0], /stopping b failed/)
    assert.match(lines[0], /b cannot stop/)
  })

  test('a stop during a start stops what was entered and keeps the rest from starting', async () => {
    const events: string[] = []
    let release!: () => void
    const slow: Component = {
      name: 'slow',
      start: () => new Promise<void>((r) => (release = r)),
      async stop() {
        events.push('stop slow')
        release()
      },
    }
    const l = new Lifecycle([part('a', events), slow, part('b', events)], silent)
    const starting = l.start()
    while (!release) await new Promise((r) => setImmediate(r))
    await l.stop()
    await assert.rejects(starting, /stopped while starting, before b/)
    assert.deepEqual(events, ['start a', 'stop slow', 'stop a'])
  })

  test('health lists the components that report one, by name; a check that throws reports it down', async () => {
    const events: string[] = []
    const l = new Lifecycle(
      [
        part('db', events, { health: () => ({ ok: true }) }),
        part('quiet', events),
        part('q', events, {
          health: async () => {
            throw new Error('no answer')
          },
        }),
      ],
      silent,
    )
    assert.deepEqual(await l.health(), { db: { ok: true }, q: { ok: false, detail: 'no answer' } })
  })

  test('builtAtStart builds its part when its turn to start comes, so it sees what started before it', async () => {
    const events: string[] = []
    let store: string | undefined
    const l = new Lifecycle(
      [
        {
          name: 'store',
          start: async () => void (store = 'open'),
          stop: async () => void (store = undefined),
        },
        builtAtStart(
          'reader',
          () => {
            events.push(`built with the store ${store}`)
            return {
              start: async () => events.push('reader started'),
              stop: async () => events.push('reader stopped'),
            }
          },
          (part) => ({ ok: part !== undefined }),
        ),
      ],
      silent,
    )
    assert.deepEqual(await l.health(), { reader: { ok: false } })
    await l.start()
    assert.deepEqual(await l.health(), { reader: { ok: true } })
    await l.stop()
    assert.deepEqual(events, ['built with the store open', 'reader started', 'reader stopped'])
    assert.equal(store, undefined)
  })
})
