import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { GiveUp, LISTENERS_OFF, waitFor } from '../helpers/index.js'

export const root = new URL('../../../', import.meta.url).pathname

/**
 * The Procfile's process types, as a PaaS reads them: `name: command` per line, the command run by bash as
 * Heroku's and Dokku's (herokuish) dynos do (so `VAR=value command` sets a variable for that process only, and
 * bash execs the command: the platform's signals and exit code are node's).
 */
export function readProcfile(path = join(root, 'Procfile')): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^([A-Za-z0-9_-]+):\s*(.+)$/.exec(line)
    if (m) out[m[1]] = m[2]
  }
  return out
}

/**
 * A shell command run as its own process group, as a PaaS runs a process type: SIGTERM goes to the group, so
 * the shell's child gets it whether or not the shell exec'd it. Output is kept for the failure message.
 */
export class ShellProcess {
  readonly child: ChildProcess
  private output = ''
  readonly exited: Promise<number | null>

  constructor(
    readonly name: string,
    command: string,
    env: Record<string, string | undefined>,
    opts: { cwd?: string; uid?: number; gid?: number } = {},
  ) {
    this.child = spawn('bash', ['-c', command], {
      cwd: opts.cwd ?? root,
      env: env as NodeJS.ProcessEnv,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      uid: opts.uid,
      gid: opts.gid,
    })
    this.child.stdout!.on('data', (d) => (this.output += d))
    this.child.stderr!.on('data', (d) => (this.output += d))
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, sig) => resolve(code ?? (sig ? -1 : 0))),
    )
  }

  out(): string {
    return this.output
  }

  /** Waits until `fn` is truthy, giving up at once if the process exits first; either failure shows its output. */
  async until<T>(fn: () => T | Promise<T>, ms: number, what: string) {
    try {
      return await waitFor(
        () => {
          if (this.child.exitCode !== null) throw new GiveUp(`it exited with ${this.child.exitCode}`)
          return fn()
        },
        ms,
        what,
      )
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- ${this.name}'s output:\n${this.output}`)
    }
  }

  /** Signals the whole group and waits for the exit; the exit code, or -1 for a death by signal. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try {
        process.kill(-this.child.pid!, signal)
      } catch {}
    }
    return this.exited
  }
}

/**
 * The environment a spawned role gets: this process's, less what would choose the broker or the database, and
 * without the listeners on fixed ports (LISTENERS_OFF).
 */
export function cleanEnv(extra: Record<string, string>): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env }
  for (const k of ['AMQP_URL', 'CLOUDAMQP_URL', 'DATABASE_URL', 'PORT', 'IOTCORE_HTTP_PORT', 'IOTCORE_ROLES'])
    delete env[k]
  return { ...env, ...LISTENERS_OFF, ...extra }
}

/** The parsed body of a GET that answered 200; otherwise throws with the status and body (for waitFor). */
export async function ready(url: string): Promise<unknown> {
  const r = await fetch(url)
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`)
  return r.json()
}
