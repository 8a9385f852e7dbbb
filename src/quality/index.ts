import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import type { Value } from '../readings/index.js'
import type { BatchJudge, Judgement, LoadedDevice, RuleDef } from '../store/index.js'
import { DeviceJudge, type DeviceState, type QualityOptions } from './device.js'

export { DEVICE_ALERTS, FLAGS, type QualityOptions } from './device.js'

/**
 * Data quality, judged by the ingest on every batch as it is stored (gateway -> queue -> ingest -> store): the
 * ingest hands each batch's readings to a QualityBatch, and the store's batch write has it judge the readings it
 * stored, inside the batch's transaction, with each device's state read and written there (store/rules.ts). It
 * sits between the ingest, which calls it, and the store, whose types it uses; it imports neither the ingest
 * nor anything above.
 *
 * A reading that fails a check is stored all the same, with the checks' names in its `flags`, and counts
 * against its device: past IOTCORE_DEVICE_CHECK_VIOLATIONS within IOTCORE_DEVICE_CHECK_WINDOW, the device
 * wants a `device_check` alert. Sequence gaps open too long want a `sequence_gap` alert; a gap found is asked
 * for again from a device that can resend (sequence.ts).
 */

export function qualityOptions(c: Config): QualityOptions {
  return {
    maxSpeedKmh: c.maxSpeedKmh,
    maxReadingAgeSeconds: c.maxReadingAgeSeconds,
    deviceCheckViolations: c.deviceCheckViolations,
    deviceCheckWindowSeconds: c.deviceCheckWindowSeconds,
    gapAlertAfterSeconds: c.gapAlertAfterSeconds,
  }
}

/**
 * Device states kept: past this many the oldest kept goes (read again when its device comes back). A state is a
 * few hundred bytes.
 */
const MAX_STATES = 20_000

/**
 * The checks of one ingest: their options, the user rules' definitions met so far (rules never change), and
 * the device states it last wrote or read, by device key, with their versions.
 */
export class Quality {
  readonly rules = new Map<number, RuleDef>()
  readonly states = new Map<number, { version: number; state: DeviceState }>()

  constructor(
    readonly options: QualityOptions,
    readonly log: Logger,
  ) {}

  batch(): QualityBatch {
    return new QualityBatch(this)
  }

  keep(pk: number, version: number, state: DeviceState): void {
    this.states.delete(pk)
    this.states.set(pk, { version, state })
    if (this.states.size > MAX_STATES) this.states.delete(this.states.keys().next().value!)
  }
}

/** The checks for one ingest batch: what the ingest added, judged once the store knows what it stored. */
export class QualityBatch implements BatchJudge {
  // The batch's readings in the order added, as columns: no object and no look-up per reading.
  private readonly deviceIds: string[] = []
  private readonly msgIds: string[] = []
  private readonly tss: number[] = []
  private readonly receivedAts: number[] = []
  private readonly valuess: Array<Record<string, Value>> = []
  /** The keys of the devices it judged. */
  private judged: number[] = []
  /** Once written: the readings flagged, and the device alerts wanted raised or cleared. */
  flagged = 0
  alerts = 0

  constructor(private readonly quality: Quality) {}

  /** A reading the batch will write (not a repeat of a msgId in it: TelemetryBatch.add says). */
  add(deviceId: string, msgId: string, ts: number, receivedAt: number, values: Record<string, Value>): void {
    this.deviceIds.push(deviceId)
    this.msgIds.push(msgId)
    this.tss.push(ts)
    this.receivedAts.push(receivedAt)
    this.valuess.push(values)
  }

  wantsStates(devices: readonly LoadedDevice[]): number[] {
    const kept = this.quality.states
    return devices.filter((d) => kept.get(d.pk)?.version !== d.version).map((d) => d.pk)
  }

  unknownRules(ids: readonly number[]): number[] {
    return ids.filter((id) => !this.quality.rules.has(id))
  }

  learnRules(defs: readonly RuleDef[]): void {
    for (const d of defs) this.quality.rules.set(d.id, d)
  }

  wantsGaps(devices: readonly LoadedDevice[]): number[] {
    return devices.filter((d) => this.stateOf(d).gaps === 1).map((d) => d.pk)
  }

  /** The device's state: as read for this batch, or as kept (wantsStates asked for every other). */
  private stateOf(d: LoadedDevice): DeviceState {
    return ((d.state === undefined ? this.quality.states.get(d.pk)?.state : d.state) ?? {}) as DeviceState
  }

  judge(devices: readonly LoadedDevice[], inserted?: ReadonlyMap<number, ReadonlySet<string>>): Judgement {
    const out: Judgement = {
      states: { pk: [], state: [] },
      flags: { pk: [], msgId: [], names: [] },
      newGaps: { pk: [], first: [], last: [], missing: [], openedAt: [], closed: [] },
      changedGaps: { id: [], missing: [], closed: [] },
      resends: { pk: [], from: [], to: [] },
      alerts: { pk: [], type: [], active: [], severity: [], details: [] },
    }
    const judges = new Map<string, DeviceJudge>()
    this.judged = devices.map((d) => d.pk)
    for (const d of devices) {
      const rules: RuleDef[] = []
      // A rule deleted since the load is still known here; one never learnt (a failed look-up) is skipped.
      for (const id of d.rules) {
        const rule = this.quality.rules.get(id)
        if (rule) rules.push(rule)
      }
      judges.set(d.id, new DeviceJudge(d, this.stateOf(d), rules, this.quality.options, inserted?.get(d.pk)))
    }
    const { deviceIds, msgIds } = this
    let lastId: string | undefined
    let j: DeviceJudge | undefined
    for (let i = 0; i < deviceIds.length; i++) {
      if (deviceIds[i] !== lastId) {
        lastId = deviceIds[i]
        j = judges.get(lastId)
      }
      // A device gone before the write, or with nothing stored; a duplicate of a stored reading.
      if (j === undefined || (j.stored !== undefined && !j.stored.has(msgIds[i]))) continue
      j.reading(msgIds[i], this.tss[i], this.receivedAts[i], this.valuess[i], out)
    }
    const now = Date.now()
    for (const d of devices) {
      const dj = judges.get(d.id)!
      // A state written is kept as version + 1: should the batch not commit, the version read next time is
      // still the old one, and the state is read again.
      if (dj.finish(now, out)) this.quality.keep(d.pk, d.version + 1, dj.st)
      else if (d.state !== undefined) this.quality.keep(d.pk, d.version, dj.st)
    }
    this.flagged = out.flags.pk.length
    this.alerts = out.alerts.pk.length
    return out
  }

  failed(err: unknown): void {
    this.discard()
    this.quality.log.error({ err }, 'quality checks failed; the batch is stored unjudged')
  }

  /**
   * The batch was not stored as judged (its transaction failed, or the checks did): the states it judged may
   * have been changed in place and not written, so they are read again next time.
   */
  discard(): void {
    this.flagged = 0
    this.alerts = 0
    for (const pk of this.judged) this.quality.states.delete(pk)
    this.judged = []
  }
}
