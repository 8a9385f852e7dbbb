import type pg from 'pg'

/**
 * PostgreSQL channel on which every ingest batch announces what it committed, for the API processes' live
 * streams (api/stream.ts). Sent inside the batch's transaction, so it is delivered only if the batch commits,
 * and after it: a listener never hears of a reading that was not stored.
 */
export const STORED_CHANNEL = 'iotcore_stored'

/** One announcement: readings stored, quarantine rows added, and the devices whose readings were stored. */
export interface StoredNotice {
  stored: number
  quarantined: number
  ids: string[]
}

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; ids are split over several below that. */
const MAX_PAYLOAD = 7900

/** The notice as payloads under the limit: the counts travel in the first, the ids spread over all. */
export function noticePayloads(n: StoredNotice): string[] {
  const out: string[] = []
  let ids: string[] = []
  let size = 0
  const head = () => (out.length === 0 ? { stored: n.stored, quarantined: n.quarantined } : {})
  for (const id of n.ids) {
    // JSON adds the quotes, the comma and any escapes: the id's JSON length bounds it.
    const len = JSON.stringify(id).length + 1
    if (ids.length > 0 && size + len > MAX_PAYLOAD - 64) {
      out.push(JSON.stringify({ ...head(), ids }))
      ids = []
      size = 0
    }
    ids.push(id)
    size += len
  }
  if (ids.length > 0 || out.length === 0) out.push(JSON.stringify({ ...head(), ids }))
  return out
}

/** The payload as a listener gets it; undefined for anything else on the channel. */
export function parseNotice(payload: string): StoredNotice | undefined {
  try {
    const x = JSON.parse(payload)
    if (x === null || typeof x !== 'object' || !Array.isArray(x.ids)) return undefined
    return {
      stored: Number.isInteger(x.stored) ? x.stored : 0,
      quarantined: Number.isInteger(x.quarantined) ? x.quarantined : 0,
      ids: x.ids.filter((id: unknown) => typeof id === 'string'),
    }
  } catch {
    return undefined
  }
}

/**
 * Announces a batch on `client` inside its open transaction (one statement, however many payloads): nothing
 * when it stored nothing and quarantined nothing, as a redelivered batch of duplicates does.
 */
export async function announceStored(client: pg.ClientBase, n: StoredNotice): Promise<void> {
  if (n.stored === 0 && n.quarantined === 0) return
  await client.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [
    STORED_CHANNEL,
    noticePayloads(n),
  ])
}
