import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join, posix, relative } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * The subset of the Dockerfile reference (docs.docker.com/reference/dockerfile) the project's Dockerfile uses,
 * read and carried out without Docker, which cannot run on this machine: each stage's filesystem is a folder,
 * the image's paths are mapped under it, RUN runs on this machine's shell, USER maps to a non-root uid.
 */
export interface Instruction {
  op: string
  args: string
}

export interface Stage {
  name: string
  from: string
  steps: Instruction[]
}

export interface Dockerfile {
  stages: Stage[]
}

export function parseDockerfile(text: string): Dockerfile {
  const lines: string[] = []
  let cont = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (!cont && (line === '' || line.startsWith('#'))) continue
    if (line.endsWith('\\')) {
      cont += `${line.slice(0, -1)} `
      continue
    }
    lines.push(cont + line)
    cont = ''
  }
  const args: Record<string, string> = {}
  const stages: Stage[] = []
  for (const line of lines) {
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line)
    if (!m) throw new Error(`not an instruction: ${line}`)
    const op = m[1].toUpperCase()
    const rest = m[2].replace(/\$\{(\w+)\}/g, (_, k) => args[k] ?? '')
    if (op === 'ARG' && stages.length === 0) {
      const [k, v = ''] = rest.split('=')
      args[k] = v
    } else if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!
      stages.push({ from: f[1], name: f[2] ?? String(stages.length), steps: [] })
    } else {
      if (!stages.length) throw new Error(`${op} before FROM`)
      stages.at(-1)!.steps.push({ op, args: rest })
    }
  }
  return { stages }
}

/** A JSON-array (exec form) argument, as ENTRYPOINT, CMD and HEALTHCHECK CMD take it here. */
export function execForm(args: string): string[] {
  const a = JSON.parse(args.slice(args.indexOf('[')))
  if (!Array.isArray(a)) throw new Error(`not exec form: ${args}`)
  return a
}

/** `.dockerignore` patterns (no `!` exceptions: the project's file has none) matched as Docker does, by path. */
export function dockerIgnored(patterns: string[], path: string): boolean {
  return patterns.some((p) => {
    const re = new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]')}(/.*)?$`,
    )
    return re.test(path)
  })
}

export interface Image {
  root: string
  workdir: string
  env: Record<string, string>
  user: string | undefined
  entrypoint: string[]
  cmd: string[]
  healthcheck: string[] | undefined
  exposed: number[]
  /** Maps a path inside the image to this machine. */
  path(p: string): string
}

/**
 * Builds the Dockerfile's stages in `into` from the build context `context`. `uid` stands for the image's
 * non-root user; `env` is added to every RUN (a cache setting, say), never to the image.
 */
export async function build(
  file: string,
  context: string,
  into: string,
  uid: number,
  env: Record<string, string>,
  log: (line: string) => void,
): Promise<{ images: Record<string, Image>; final: Image }> {
  const df = parseDockerfile(readFileSync(file, 'utf8'))
  const ignore = existsSync(join(context, '.dockerignore'))
    ? readFileSync(join(context, '.dockerignore'), 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
    : []
  const images: Record<string, Image> = {}
  let img!: Image
  for (const stage of df.stages) {
    const root = join(into, `stage-${stage.name}`)
    mkdirSync(root, { recursive: true })
    const image: Image = {
      root,
      workdir: '/',
      env: {},
      user: undefined,
      entrypoint: [],
      cmd: [],
      healthcheck: undefined,
      exposed: [],
      path: (p) => join(root, posix.resolve(image.workdir, p)),
    }
    img = images[stage.name] = image
    // The stage's unprivileged user, named before USER switches to it (a `chown node:node`).
    const stageUser = [...stage.steps].reverse().find((s) => s.op === 'USER')?.args
    // The image's own top-level folders, so a RUN's `/data` means the stage's, not this machine's.
    const ownDirs = new Set<string>()
    const mapCommand = (cmd: string) =>
      cmd
        .replace(/(^|\s)(\/[\w./-]+)/g, (all, sp, p: string) =>
          ownDirs.has(p.split('/')[1]) ? sp + join(root, p) : all,
        )
        .replace(/chown (\w+):(\w+)/g, (all, u) => (u === stageUser ? `chown ${uid}:${uid}` : all))
    for (const { op, args } of stage.steps) {
      log(`[${stage.name}] ${op} ${args}`)
      if (op === 'WORKDIR') {
        img.workdir = posix.resolve(img.workdir, args)
        ownDirs.add(img.workdir.split('/')[1])
        mkdirSync(img.path('.'), { recursive: true })
      } else if (op === 'ENV') {
        for (const m of args.matchAll(/(\w+)=(\S+)/g)) {
          img.env[m[1]] = m[2]
          if (m[2].startsWith('/')) ownDirs.add(m[2].split('/')[1])
        }
      } else if (op === 'COPY') {
        const words = args.split(/\s+/)
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length)
        const paths = words.filter((w) => !w.startsWith('--'))
        const dest = paths.pop()!
        for (const src of paths) {
          let source: string
          if (from) {
            source = images[from].path(src)
          } else {
            source = join(context, src)
            const rel = relative(context, source)
            if (dockerIgnored(ignore, rel)) throw new Error(`COPY ${src}: excluded by .dockerignore`)
          }
          if (!existsSync(source)) throw new Error(`COPY ${src}: not found`)
          const target = dest.endsWith('/') ? join(img.path(dest), posix.basename(src)) : img.path(dest)
          mkdirSync(dirname(target), { recursive: true })
          cpSync(source, target, {
            recursive: true,
            filter: (s) => !dockerIgnored(ignore, relative(context, s)),
          })
        }
      } else if (op === 'RUN') {
        const user = img.user && img.user !== 'root' ? uid : undefined
        const { stdout, stderr } = await run('sh', ['-c', mapCommand(args)], {
          cwd: img.path('.'),
          env: { PATH: process.env.PATH, HOME: process.env.HOME, ...network(), ...runtimeEnv(img), ...env },
          uid: user,
          gid: user,
          maxBuffer: 64 * 1024 * 1024,
        })
        for (const l of `${stdout}${stderr}`.trim().split('\n').slice(-3)) log(`    ${l}`)
      } else if (op === 'USER') {
        img.user = args
      } else if (op === 'EXPOSE') {
        img.exposed.push(...args.split(/\s+/).map((p) => Number.parseInt(p, 10)))
      } else if (op === 'HEALTHCHECK') {
        img.healthcheck = execForm(args.slice(args.indexOf('CMD') + 3))
      } else if (op === 'ENTRYPOINT') {
        img.entrypoint = execForm(args)
      } else if (op === 'CMD') {
        img.cmd = execForm(args)
      } else if (op !== 'VOLUME' && op !== 'ARG') {
        throw new Error(`instruction not carried out by this runner: ${op}`)
      }
    }
  }
  return { images, final: img }
}

/**
 * This machine's proxy and CA settings, which a RUN's downloads need here as a builder's daemon has its own:
 * nothing else of this process's environment (npm's lifecycle variables, the test's) reaches a step.
 */
function network(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] =>
        e[1] !== undefined &&
        /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|(HTTPS?|NO|ALL)_PROXY)$/i.test(e[0]),
    ),
  )
}

/** The image's ENV as a process inside it sees it, its absolute paths mapped to this machine. */
export function runtimeEnv(img: Image): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(img.env)) out[k] = v.startsWith('/') ? join(img.root, v) : v
  return out
}
