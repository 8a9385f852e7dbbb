import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import type { Value } from '../readings/index.js'
import type { BatchJudge, Judgement, LoadedDevice, RuleDef } from '../store/index.js'
import { DeviceJudge, type DeviceState, type QualityOptions } from './device.js'

export { DEVICE_ALERTS, FLAGS, FUTURE_MS, type QualityOptions, RULE_FLAG_PREFIX } from './device.js'

/**
 * Data quality, judged by the ingest on every batch as it is stored (gateway -> queue -> ingest -> store): the
 * ingest hands each batch's readings to a QualityBatch, and the store's batch write has it judge the readings it
 * stored, inside the batch's transaction, with each device's state read and written there (store/rules.ts). It
 * sits between the ingest, which calls it, and the store, whose types it uses; it imports neither the ingest
 * nor anything above.
 *
 * A reading that fails a check is stored all the same, with the checks' names in its `flags`, and counts
 * against its device: past IOTCORE_DEVICE_CHECK_VIOLATIONS within IOTCORE_DEVICE_CHECK_WINDOW, the device
 * wants a `device_check` alert. Sequence gaps open too long want a `sequence_gap` alert.
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

/** The checks of one ingest: their options, and the user rules' definitions met so far (rules never change). */
export class Quality {
  readonly rules = new Map<number, RuleDef>()

  constructor(
    readonly options: QualityOptions,
    readonly log: Logger,
  ) {}

  batch(): QualityBatch {
    return new QualityBatch(this)
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

  unknownRules(ids: readonly number[]): number[] {
    return ids.filter((id) => !this.quality.rules.has(id))
  }

  learnRules(defs: readonly RuleDef[]): void {
    for (const d of defs) this.quality.rules.set(d.id, d)
  }

  wantsGaps(devices: readonly LoadedDevice[]): number[] {
    return devices.filter((d) => (d.state as DeviceState | null)?.gaps === 1).map((d) => d.pk)
  }

  judge(devices: readonly LoadedDevice[], inserted?: ReadonlyMap<number, ReadonlySet<string>>): Judgement {
    const out: Judgement = {
      states: { pk: [], state: [] },
      flags: { pk: [], msgId: [], names: [] },
      newGaps: { pk: [], first: [], last: [], missing: [], openedAt: [], closed: [] },
      changedGaps: { id: [], missing: [], closed: [] },
      alerts: { pk: [], type: [], active: [], severity: [], details: [] },
    }
    const judges = new Map<string, DeviceJudge>()
    for (const d of devices) {
      const rules: RuleDef[] = []
      // A rule deleted since the load is still known here; one never learnt (a failed look-up) is skipped.
      for (const id of d.rules) {
        const rule = this.quality.rules.get(id)
        if (rule) rules.push(rule)
      }
      judges.set(d.id, new DeviceJudge(d, rules, this.quality.options, inserted?.get(d.pk)))
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
    for (const dj of judges.values()) dj.finish(now, out)
    this.flagged = out.flags.pk.length
    this.alerts = out.alerts.pk.length
    return out
  }

  failed(err: unknown): void {
    this.flagged = 0
    this.alerts = 0
    this.quality.log.error({ err }, 'quality checks failed; the batch is stored unjudged')
  }
}
