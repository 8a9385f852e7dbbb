import type { Logger } from 'pino'

/** One component's entry in /readyz. */
export interface Health {
  ok: boolean
  detail?: string
  [k: string]: unknown
}

/** A long-lived part of the process: started once, stopped once, and, if it has one, asked for its health. */
export interface Component {
  /** Its name in logs, and its key in /readyz when it reports health. */
  readonly name: string
  start(): Promise<void>
  /**
   * Called after start() resolved, or after it failed or while it is still running (a stop during start):
   * it must undo whatever part of start() was done.
   */
  stop(): Promise<void>
  health?(): Health | Promise<Health>
}

/**
 * Runs components in order and stops them in reverse. A start that fails half-way stops, in reverse, every
 * component it entered (the failing one too: a listener that did not bind may have set up its timers), then
 * throws the start's error. A stop during a start stops what was entered and keeps the rest from starting.
 */
export class Lifecycle {
  private readonly entered: Component[] = []
  private stopping: Promise<void> | undefined

  constructor(
    readonly components: readonly Component[],
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    for (const c of this.components) {
      if (this.stopping) throw new Error(`stopped while starting, before ${c.name}`)
      this.entered.push(c)
      try {
        await c.start()
      } catch (err) {
        await this.stop()
        throw err
      }
    }
  }

  /** Stops every component entered, last first; one that fails to stop is logged and the rest still stop. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const c of [...this.entered].reverse()) {
        try {
          await c.stop()
        } catch (err) {
          this.log.error({ err, component: c.name }, `stopping ${c.name} failed`)
        }
      }
    })()
    return this.stopping
  }

  /** Each component's health, by name, in start order; a health check that throws reports the component down. */
  async health(): Promise<Record<string, Health>> {
    const out: Record<string, Health> = {}
    const checks = this.components.filter((c) => c.health)
    const results = await Promise.all(
      checks.map(async (c): Promise<Health> => {
        try {
          return await c.health!()
        } catch (err) {
          return { ok: false, detail: (err as Error).message }
        }
      }),
    )
    for (let i = 0; i < checks.length; i++) out[checks[i].name] = results[i]
    return out
  }
}

/** What builtAtStart builds: a part with a start and a stop of its own. */
export interface Part {
  start(): unknown
  stop(): Promise<unknown>
}

/**
 * A component around a part built when its turn to start comes, so that it can use what started before it
 * (the store, the credentials). `build` may keep the part where others find it.
 */
export function builtAtStart<T extends Part>(
  name: string,
  build: () => T,
  health?: (part: T | undefined) => Health,
): Component {
  let part: T | undefined
  return {
    name,
    async start() {
      part = build()
      await part.start()
    },
    async stop() {
      await part?.stop()
    },
    ...(health ? { health: () => health(part) } : {}),
  }
}
