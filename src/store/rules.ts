import type pg from 'pg'
import { IotError } from '../errors.js'
import { queueResends } from './commands.js'
import { pgFault } from './outage.js'
import type { Db } from './pool.js'
import { apiRow, msToTs, tsToMs } from './sql.js'

/**
 * The quality checks' tables (migration 10): user rules, each device's check state, the device alerts the
 * checks want. The checks themselves are src/quality's; this module reads and writes what they decide, in the
 * ingest's batch transaction (judgeStored) or for the API.
 */

/** When a reading breaks a rule: a value outside [min, max], a key absent, a value unchanged for a while. */
export type RuleCondition =
  | { type: 'range'; key: string; min?: number; max?: number }
  | { type: 'missing'; key: string }
  | { type: 'stuck'; key: string; seconds: number }

/**
 * When a condition is a violation (ThingsBoard's alarm kinds): at once (simple), once it has held for
 * `seconds` (duration), or once it held `count` times within `seconds` (repeating).
 */
export type RuleTrigger =
  | { type: 'simple' }
  | { type: 'duration'; seconds: number }
  | { type: 'repeating'; count: number; seconds: number }

export interface NewRule {
  name: string
  /** One device; or else the devices whose attributes contain `attributes` ({} is every device). */
  deviceId?: string
  attributes?: Record<string, unknown>
  condition: RuleCondition
  trigger: RuleTrigger
}

export interface RuleRow {
  id: string
  name: string
  deviceId: string | null
  attributes: Record<string, unknown> | null
  condition: RuleCondition
  trigger: RuleTrigger
  createdAt: string
}

/** What the ingest's checks need of a rule: it never changes once created, so they keep it by id. */
export interface RuleDef {
  id: number
  name: string
  condition: RuleCondition
  trigger: RuleTrigger
}

/** An open gap of a device's sequence, as judgeStored loads it. */
export interface OpenGap {
  id: number
  /** Still missing: flattened inclusive ranges [a1, b1, a2, b2, ...]. */
  missing: number[]
  /** ms since the epoch */
  openedAt: number
}

/** One device of a batch, as its checks find it before judging the batch's stored readings. */
export interface LoadedDevice {
  pk: number
  id: string
  /** The version of its state (devices.quality_version): 0 before the checks wrote any. */
  version: number
  /**
   * What its checks wrote last (devices.quality, src/quality's DeviceState), for a device the judge asked it for
   * (BatchJudge.wantsStates); undefined for the others. null: none written yet.
   */
  state?: unknown
  /** The ids of the rules that apply to it, ascending. */
  rules: number[]
  /** Its open gaps, for a device the judge asked them for (BatchJudge.wantsGaps); undefined for the others. */
  gaps?: OpenGap[]
  /** The types of its device alerts wanted active (device_alerts_due), loaded with its gaps. */
  alerts?: string[]
}

/**
 * What the checks decided for a batch, column by column, as the write binds it: the devices' states that
 * changed, the flags of the flagged readings, new and changed gaps, and alerts wanted raised or cleared.
 */
export interface Judgement {
  states: { pk: number[]; state: string[] }
  /** `names`: the flag names, comma-separated (no name holds a comma). */
  flags: { pk: number[]; msgId: string[]; names: string[] }
  /** `missing` as a PostgreSQL int8[] literal. A gap found and closed in one batch is a reordering: left out. */
  newGaps: {
    pk: number[]
    first: number[]
    last: number[]
    missing: string[]
    openedAt: number[]
    closed: boolean[]
  }
  changedGaps: { id: number[]; missing: string[]; closed: boolean[] }
  /**
   * Ranges to ask devices to resend (store/commands.ts, queueResends): of each new gap still open, the first
   * and last seq it misses; queued as `resend` commands for the devices that can.
   */
  resends: { pk: number[]; from: number[]; to: number[] }
  /** `details` as JSON text. */
  alerts: { pk: number[]; type: string[]; active: boolean[]; severity: string[]; details: string[] }
}

/**
 * The ingest's checks for one batch (src/quality's QualityBatch), as the batch's write drives them: it holds the
 * batch's readings; the write tells it which were stored and what its devices' state is, and writes back what
 * it decides, all in the batch's transaction.
 */
export interface BatchJudge {
  /** The keys of the devices, as loaded, whose state it does not hold in this version. */
  wantsStates(devices: readonly LoadedDevice[]): number[]
  /** Of these rule ids, those whose definitions it does not hold. */
  unknownRules(ids: readonly number[]): number[]
  learnRules(defs: readonly RuleDef[]): void
  /** The keys of the devices, as loaded, whose open gaps it needs: their state says they have some. */
  wantsGaps(devices: readonly LoadedDevice[]): number[]
  /**
   * Judges the stored readings of these devices: every reading of theirs, or, where `inserted` is given (a
   * batch that repeated stored readings), only the msgIds it holds per device key.
   */
  judge(devices: readonly LoadedDevice[], inserted?: ReadonlyMap<number, ReadonlySet<string>>): Judgement
  /** The checks failed (a bug, or a row PostgreSQL refused): the batch is stored unjudged, and this says why. */
  failed(err: unknown): void
}

/**
 * What the batch's UPDATE of `latest` returns when the checks run: each device's key, the version of its check
 * state and the ids of the rules that apply to it. The UPDATE holds the row's lock, and waits for a concurrent
 * batch of the device to commit before it returns the row as that one left it: the version is read in order,
 * at no extra query. Rules are looked up only if there are any (the EXISTS runs once per statement).
 */
export const JUDGE_RETURNING = `d.pk, d.quality_version AS version,
  CASE WHEN (SELECT EXISTS (SELECT FROM quality_rules)) THEN
    ARRAY(SELECT r.id FROM quality_rules r WHERE r.device_id = d.id OR d.attributes @> r.attributes ORDER BY r.id)
  END AS rules`

/**
 * Runs the checks over the stored readings of a batch inside its transaction, after the rows and the devices'
 * latest values are written. `live`: the batch's live devices, id to key, as the write locked them. `returned`:
 * the rows of the UPDATE of `latest` (JUDGE_RETURNING) when every reading was stored; else, on the dedup path,
 * `inserted` says which were, and the states are read here, after that UPDATE took the rows' locks.
 *
 * Most batches cost nothing more: the checks change no state, flag nothing, and nothing is written. The checks
 * never cost a reading: should they fail for any reason but an outage (which fails the batch, to be retried
 * whole), what they did is rolled back to a savepoint and the batch is stored unjudged (judge.failed).
 */
export async function judgeStored(
  client: pg.ClientBase,
  judge: BatchJudge,
  live: ReadonlyMap<string, number>,
  inserted?: ReadonlyMap<number, ReadonlySet<string>>,
  returned?: ReadonlyArray<Record<string, any>>,
): Promise<void> {
  const idOf = new Map<number, string>()
  for (const [id, pk] of live) if (!inserted || inserted.has(pk)) idOf.set(pk, id)
  if (idOf.size === 0) return
  let savepoint = false
  /** Before anything but the UPDATE's rows is read or written: from there a failure can be undone. */
  const mark = async () => {
    if (savepoint) return
    await client.query('SAVEPOINT judge')
    savepoint = true
  }
  try {
    let rows = returned
    if (rows === undefined) {
      await mark()
      rows = (
        await client.query(`SELECT ${JUDGE_RETURNING} FROM devices d WHERE d.pk = ANY($1::int8[])`, [
          [...idOf.keys()],
        ])
      ).rows
    }
    const devices: LoadedDevice[] = rows.map((x) => ({
      pk: x.pk,
      id: idOf.get(x.pk)!,
      version: x.version,
      // int8[] comes as strings (pg parses only scalar int8 to numbers, pool.ts).
      rules: x.rules === null ? [] : (x.rules as string[]).map(Number),
    }))
    const stale = judge.wantsStates(devices)
    if (stale.length > 0) {
      await mark()
      const states = await client.query(
        'SELECT pk, quality_version AS version, quality FROM devices WHERE pk = ANY($1::int8[])',
        [stale],
      )
      const byPk = new Map(devices.map((d) => [d.pk, d]))
      for (const x of states.rows) {
        const d = byPk.get(x.pk)!
        d.version = x.version
        d.state = x.quality
      }
    }
    const unknown = judge.unknownRules([...new Set(devices.flatMap((d) => d.rules))])
    if (unknown.length > 0) {
      await mark()
      const defs = await client.query(
        'SELECT id, name, condition, trigger FROM quality_rules WHERE id = ANY($1::int8[])',
        [unknown],
      )
      judge.learnRules(defs.rows)
    }
    const gapped = judge.wantsGaps(devices)
    if (gapped.length > 0) {
      await mark()
      await loadGaps(client, devices, gapped)
    }
    const j = judge.judge(devices, inserted)
    if (isEmpty(j)) return
    await mark()
    await saveJudgement(client, j)
  } catch (err) {
    if (pgFault(err) === 'outage') throw err
    if (savepoint) await client.query('ROLLBACK TO SAVEPOINT judge')
    judge.failed(err)
  }
}

function isEmpty(j: Judgement): boolean {
  return (
    j.states.pk.length === 0 &&
    j.flags.pk.length === 0 &&
    j.newGaps.pk.length === 0 &&
    j.changedGaps.id.length === 0 &&
    j.resends.pk.length === 0 &&
    j.alerts.pk.length === 0
  )
}

/** Adds their open gaps and active alert types to the devices of these keys. */
async function loadGaps(
  client: pg.ClientBase,
  devices: LoadedDevice[],
  keys: readonly number[],
): Promise<void> {
  const r = await client.query(
    `SELECT u.pk,
       coalesce((SELECT json_agg(json_build_array(g.id, g.missing, ${tsToMs('g.opened_at')}) ORDER BY g.first_seq)
                 FROM sequence_gaps g WHERE g.device_pk = u.pk AND g.closed_at IS NULL), '[]') AS gaps,
       ARRAY(SELECT a.type FROM device_alerts_due a WHERE a.device_pk = u.pk AND a.active) AS alerts
     FROM unnest($1::int8[]) AS u(pk)`,
    [keys],
  )
  const byPk = new Map(devices.map((d) => [d.pk, d]))
  for (const x of r.rows) {
    const d = byPk.get(x.pk)!
    d.gaps = (x.gaps as Array<[number, number[], number]>).map(([id, missing, openedAt]) => ({
      id,
      missing,
      openedAt,
    }))
    d.alerts = x.alerts
  }
}

/** Writes a Judgement in one statement: only the parts that hold something. */
async function saveJudgement(client: pg.ClientBase, j: Judgement): Promise<void> {
  const params: unknown[] = []
  const bind = (...cols: unknown[]) => cols.map((c) => `$${params.push(c)}`)
  const parts: string[] = []
  if (j.states.pk.length > 0) {
    const [pk, state] = bind(j.states.pk, j.states.state)
    parts.push(`s AS (UPDATE devices d SET quality = u.state, quality_version = d.quality_version + 1
      FROM unnest(${pk}::int8[], ${state}::jsonb[]) AS u(pk, state) WHERE d.pk = u.pk)`)
  }
  if (j.flags.pk.length > 0) {
    const [pk, msgId, names] = bind(j.flags.pk, j.flags.msgId, j.flags.names)
    parts.push(`f AS (UPDATE telemetry t SET flags = string_to_array(u.names, ',')
      FROM unnest(${pk}::int8[], ${msgId}::text[], ${names}::text[]) AS u(pk, msg_id, names)
      WHERE t.device_pk = u.pk AND t.msg_id = u.msg_id)`)
  }
  if (j.newGaps.pk.length > 0) {
    const g = j.newGaps
    const [pk, first, last, missing, openedAt, closed] = bind(
      g.pk,
      g.first,
      g.last,
      g.missing,
      g.openedAt,
      g.closed,
    )
    parts.push(`n AS (INSERT INTO sequence_gaps (device_pk, first_seq, last_seq, missing, opened_at, closed_at)
      SELECT pk, a, b, m::int8[], ${msToTs('o')}, CASE WHEN c THEN now() END
      FROM unnest(${pk}::int8[], ${first}::int8[], ${last}::int8[], ${missing}::text[], ${openedAt}::int8[],
                  ${closed}::bool[]) AS u(pk, a, b, m, o, c))`)
  }
  if (j.changedGaps.id.length > 0) {
    const g = j.changedGaps
    const [id, missing, closed] = bind(g.id, g.missing, g.closed)
    parts.push(`g AS (UPDATE sequence_gaps g SET missing = u.m::int8[], closed_at = CASE WHEN u.c THEN now() END
      FROM unnest(${id}::int8[], ${missing}::text[], ${closed}::bool[]) AS u(id, m, c) WHERE g.id = u.id)`)
  }
  let result = '1'
  if (j.resends.pk.length > 0) {
    const [pk, from, to] = bind(j.resends.pk, j.resends.from, j.resends.to)
    const r = queueResends(pk, from, to)
    parts.push(r.cte)
    result = r.announce
  }
  if (j.alerts.pk.length > 0) {
    const a = j.alerts
    const [pk, type, active, severity, details] = bind(a.pk, a.type, a.active, a.severity, a.details)
    parts.push(`a AS (${UPSERT_DUE}
      SELECT pk, t, ac, sv, d::jsonb, now()
      FROM unnest(${pk}::int8[], ${type}::text[], ${active}::bool[], ${severity}::text[], ${details}::text[])
        AS u(pk, t, ac, sv, d)
      ${ON_DUE_CONFLICT})`)
  }
  if (parts.length > 0) await client.query(`WITH ${parts.join(',\n')} SELECT ${result}`, params)
}

export const UPSERT_DUE =
  'INSERT INTO device_alerts_due (device_pk, type, active, severity, details, changed_at)'
/** A changed wish is a new version, to be handed over again. */
export const ON_DUE_CONFLICT = `ON CONFLICT (device_pk, type) DO UPDATE SET active = excluded.active,
  severity = excluded.severity, details = excluded.details, changed_at = excluded.changed_at,
  version = device_alerts_due.version + 1, delivered = false`

/** A device alert the checks want raised (active) or cleared, not yet handed to the alerts. */
export interface DueAlert {
  deviceId: string
  type: string
  active: boolean
  severity: string
  details: Record<string, unknown>
  /** When the checks last changed it (ISO 8601). */
  changedAt: string
}

/** Rule names: they appear in reading flags (`rule:<name>`), which are comma-separated. */
export const RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/

const RULE_COLUMNS = `id::text, name, device_id AS "deviceId", attributes, condition, trigger, created_at AS "createdAt"`

/** User rules, for the API. */
export class RuleStore {
  constructor(private readonly db: Db) {}

  /** IOT_ERR_RULE_CONFLICT when the name is taken, IOT_ERR_DEVICE_NOT_FOUND when the device does not exist. */
  async create(r: NewRule): Promise<RuleRow> {
    try {
      const x = await this.db.query(
        `INSERT INTO quality_rules (name, device_id, attributes, condition, trigger)
         VALUES ($1, $2, $3, $4, $5) RETURNING ${RULE_COLUMNS}`,
        [
          r.name,
          r.deviceId ?? null,
          r.deviceId === undefined ? (r.attributes ?? {}) : null,
          r.condition,
          r.trigger,
        ],
      )
      return ruleRow(x.rows[0])
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === '23505') throw new IotError('IOT_ERR_RULE_CONFLICT', r.name)
      if (code === '23503') throw new IotError('IOT_ERR_DEVICE_NOT_FOUND', r.deviceId ?? '')
      throw err
    }
  }

  /** Every rule, oldest first. */
  async list(): Promise<RuleRow[]> {
    const r = await this.db.query(`SELECT ${RULE_COLUMNS} FROM quality_rules ORDER BY id`)
    return r.rows.map(ruleRow)
  }

  async get(id: string): Promise<RuleRow | undefined> {
    if (!/^\d{1,18}$/.test(id)) return undefined
    const r = await this.db.query(`SELECT ${RULE_COLUMNS} FROM quality_rules WHERE id = $1`, [id])
    return r.rows[0] ? ruleRow(r.rows[0]) : undefined
  }

  /**
   * False if there was no such rule. Its clocks in the devices' state are dropped by their next batch; the
   * flags it set stay on the readings.
   */
  async delete(id: string): Promise<boolean> {
    if (!/^\d{1,18}$/.test(id)) return false
    const r = await this.db.query('DELETE FROM quality_rules WHERE id = $1', [id])
    return (r.rowCount ?? 0) > 0
  }
}

const ruleRow = (x: Record<string, any>) => apiRow<RuleRow>(x, ['createdAt'])

/** The device alerts the checks want (device_alerts_due), handed over to the alerts by the ingest. */
export class DueAlertStore {
  constructor(private readonly db: Db) {}

  /**
   * Hands the wishes not yet handed over, oldest first, to `deliver`, and marks those it took as handed over
   * unless they changed meanwhile (then the next round hands over the new version). Returns how many it took.
   * At least once: should two processes hand over at once, or the mark fail, a wish is handed over again.
   */
  async deliver(limit: number, deliver: (alerts: DueAlert[]) => Promise<void>): Promise<number> {
    const r = await this.db.query(
      `SELECT a.device_pk AS pk, d.id AS "deviceId", a.type, a.active, a.severity, a.details,
              a.changed_at AS "changedAt", a.version
       FROM device_alerts_due a JOIN devices d ON d.pk = a.device_pk
       WHERE NOT a.delivered ORDER BY a.changed_at LIMIT $1`,
      [limit],
    )
    if (r.rows.length === 0) return 0
    await deliver(
      r.rows.map((x) => ({
        deviceId: x.deviceId,
        type: x.type,
        active: x.active,
        severity: x.severity,
        details: x.details,
        changedAt: (x.changedAt as Date).toISOString(),
      })),
    )
    await this.db.query(
      `UPDATE device_alerts_due a SET delivered = true
       FROM unnest($1::int8[], $2::text[], $3::int8[]) AS u(pk, type, version)
       WHERE a.device_pk = u.pk AND a.type = u.type AND a.version = u.version`,
      [r.rows.map((x) => x.pk), r.rows.map((x) => x.type), r.rows.map((x) => x.version)],
    )
    return r.rows.length
  }
}
