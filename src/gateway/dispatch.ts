import type { Logger } from 'pino'
import { type ClaimedCommand, jsonProblem, type Listener, type Store } from '../store/index.js'
import type { CommandChannel, CommandEvents, OutboundCommand } from './commands.js'

/** A device's waiting commands are claimed this many at a time; a device with more gets another claim. */
const CLAIM_BATCH = 100
/** How often waiting commands past their ttl are expired and those of gone processes reclaimed. */
const SWEEP_MS = 2000
/**
 * A command whose every send died with its connection is failed after this many: a command that kills the
 * device's connection (a firmware that crashes on it) must not take it down forever.
 */
const MAX_ATTEMPTS = 5
/** A record of a command's progress that failed (the database was away) is tried again this many sweeps. */
const WRITE_TRIES = 5
/** A device's answer is JSON of its own: past this nesting it is not stored (PostgreSQL's jsonb would fail). */
const MAX_RESULT_DEPTH = 32

export interface DispatcherOptions {
  /** This process's id in `services` (its heartbeat's): the commands it sends are claimed under it. */
  serviceId: string
  /** A process whose heartbeat is this much older than now is gone: what it was sending is sent again. */
  silentAfterSeconds: number
}

/**
 * The commands dispatcher, one in every gateway process. It sends each device's waiting commands through the
 * channel (MQTT, Teltonika) that holds the device's connection here, when a device connects, when a command
 * is queued (PostgreSQL NOTIFY, heard by every process: only one holding the device's connection claims), and
 * at start; and it records what the channels report: delivered, replied, lost with the connection.
 *
 * Exactly once per connection: a command is claimed (atomically, store/commands.ts) before it goes out, and is
 * `sent` until its connection reports it delivered or lost; only a lost one is queued again, for the device's
 * next connection, here or on another process. Two processes, or two connections of one device, never hold
 * one command at once.
 *
 * It lives with the gateways, not in the store or the API: it runs with the gateway role, in each gateway
 * process, and drives the gateways' channels (commands.ts), while the store only keeps the commands.
 *
 * Which devices are connected here it learns from the channels' onConnect; a channel cannot tell it when they
 * leave, so the set is a hint: a device found gone when its command is handed over (no channel sends it) is
 * dropped from it, and the command given back to the queue for a process that does hold the device.
 */
export class CommandDispatcher implements CommandEvents {
  private readonly channels: CommandChannel[] = []
  private readonly detach: Array<() => void> = []
  /** Devices that connected here and were not found gone since. */
  private readonly here = new Set<string>()
  /** Devices being dispatched, with whether to go again when done (a notification came meanwhile). */
  private readonly running = new Map<string, boolean>()
  /** Devices whose dispatch failed (the database was away): tried again at the next sweep. */
  private readonly retryDevices = new Set<string>()
  /** Records that failed, with the tries left, tried again at the next sweep. */
  private retryWrites: Array<{ write: () => Promise<unknown>; tries: number }> = []
  private readonly pending = new Set<Promise<unknown>>()
  private listener: Listener | undefined
  private timer: NodeJS.Timeout | undefined
  private sweeping = false
  private stopped = false

  constructor(
    private readonly store: Store,
    private readonly opts: DispatcherOptions,
    private readonly log: Logger,
  ) {}

  /**
   * Sends through this channel from now on. Attach a channel before its gateway accepts connections, so that
   * no device's connect goes unheard.
   */
  attach(channel: CommandChannel): void {
    this.channels.push(channel)
    this.detach.push(
      channel.onConnect((deviceId) => {
        this.here.add(deviceId)
        this.dispatch(deviceId)
      }),
    )
  }

  /** Listens for queued commands, then sweeps once (reclaiming what a gone process held) and every SWEEP_MS. */
  async start(): Promise<void> {
    this.listener = await this.store.notifications.listen(this.store.commands.channel, {
      notify: (deviceId) => this.dispatch(deviceId),
      // Commands queued while not listening were not heard: look for every device connected here.
      resumed: () => {
        for (const d of this.here) this.dispatch(d)
      },
    })
    await this.sweep()
    this.timer = setInterval(() => this.sweep(), SWEEP_MS)
    this.timer.unref()
  }

  /**
   * After the gateways stopped (their connections' closes reported every command in flight as lost): waits
   * for the records under way, then gives back to the queue whatever this process still holds as sent.
   */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    for (const d of this.detach) d()
    await this.listener?.stop()
    while (this.pending.size > 0) await Promise.allSettled([...this.pending])
    for (const r of this.retryWrites) await r.write().catch(() => {})
    await this.store.commands
      .release(this.opts.serviceId, 'the gateway process stopped before the device took it')
      .catch((err) => this.log.warn({ err: err.message }, 'commands in flight not given back at stop'))
  }

  // ---- sending

  /** Sends the device's waiting commands if it is connected here; one dispatch per device at a time. */
  private dispatch(deviceId: string): void {
    if (this.stopped || !this.here.has(deviceId)) return
    if (this.running.has(deviceId)) {
      this.running.set(deviceId, true)
      return
    }
    this.running.set(deviceId, false)
    this.track(
      this.drain(deviceId)
        .catch((err) => {
          this.log.warn({ deviceId, err: err.message }, 'commands not dispatched; trying again shortly')
          this.retryDevices.add(deviceId)
        })
        .finally(() => {
          const again = this.running.get(deviceId)
          this.running.delete(deviceId)
          if (again) this.dispatch(deviceId)
        }),
    )
  }

  private async drain(deviceId: string): Promise<void> {
    for (;;) {
      const batch = await this.store.commands.claim(deviceId, this.opts.serviceId, CLAIM_BATCH)
      for (let i = 0; i < batch.length; i++) {
        if (this.handOver(batch[i])) continue
        // Gone from here: what was claimed goes back, announced for a process that holds the device.
        this.here.delete(deviceId)
        this.log.debug({ deviceId }, 'device no longer connected here; its commands go back to the queue')
        for (const c of batch.slice(i)) await this.store.commands.unclaim(c.id, this.opts.serviceId)
        return
      }
      if (batch.length < CLAIM_BATCH) return
    }
  }

  private handOver(c: ClaimedCommand): boolean {
    const cmd: OutboundCommand = { id: c.id, deviceId: c.deviceId, name: c.name, params: c.params }
    for (const ch of this.channels) {
      if (ch.send(cmd, this)) {
        this.log.debug({ deviceId: c.deviceId, command: c.id, transport: ch.transport }, 'command sent')
        return true
      }
    }
    return false
  }

  // ---- what the channels report (CommandEvents), recorded in PostgreSQL

  delivered(id: string): void {
    this.record(() => this.store.commands.delivered(id))
  }

  /** The device answered on the connection the command went out on. */
  replied(id: string, status: 'ok' | 'error', result?: unknown): void {
    this.reply(null, id, status, result)
  }

  failed(id: string, reason: string): void {
    this.record(() => this.store.commands.lost(id, this.opts.serviceId, reason, MAX_ATTEMPTS))
  }

  /**
   * The device `deviceId` answered command `id` (MQTT: on `devices/<id>/commands/ack`, from any connection):
   * recorded only if the command is that device's and still open. A result PostgreSQL cannot store (U+0000,
   * too deep) is left out, and the command says so.
   */
  reply(deviceId: string | null, id: string, status: 'ok' | 'error', result?: unknown): void {
    const problem = result === undefined ? undefined : jsonProblem(result, 'result', MAX_RESULT_DEPTH)
    const stored = result === undefined || problem ? null : JSON.stringify(result)
    let error = status === 'error' ? 'the device answered error' : null
    if (problem) error = `the device answered ${status}; its result was not stored: ${problem.message}`
    this.record(async () => {
      const took = await this.store.commands.replied(id, deviceId, status === 'ok', stored, error)
      if (!took)
        this.log.info(
          { deviceId: deviceId ?? undefined, command: id },
          'answer to no open command of this device; ignored',
        )
    })
  }

  /** The command cannot be delivered on any connection of the device (refused by it, too large for it). */
  refused(id: string, reason: string): void {
    this.record(() => this.store.commands.refused(id, reason))
  }

  /** Runs a record now; if it fails, again at the next sweeps, a few times. */
  private record(write: () => Promise<unknown>): void {
    this.track(
      write().catch((err) => {
        this.log.warn({ err: err.message }, 'command progress not recorded; trying again shortly')
        this.retryWrites.push({ write, tries: WRITE_TRIES })
      }),
    )
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p)
    p.finally(() => this.pending.delete(p))
  }

  // ---- the sweep

  private async sweep(): Promise<void> {
    if (this.sweeping || this.stopped) return
    this.sweeping = true
    try {
      const writes = this.retryWrites
      this.retryWrites = []
      for (const r of writes) {
        await r.write().catch((err) => {
          if (--r.tries > 0) this.retryWrites.push(r)
          else this.log.error({ err: err.message }, 'command progress lost: the database refused it')
        })
      }
      const expired = await this.store.commands.expire()
      if (expired > 0) this.log.info({ expired }, 'commands expired before they could be sent')
      const devices = await this.store.commands.reclaim(
        this.opts.serviceId,
        this.opts.silentAfterSeconds,
        'the gateway process that sent it is gone',
      )
      if (devices > 0) this.log.info({ devices }, 'commands of a gone gateway process queued again')
      for (const d of this.retryDevices) this.dispatch(d)
      this.retryDevices.clear()
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'commands sweep failed')
    } finally {
      this.sweeping = false
    }
  }
}
