/** Small pieces every page draws the same way. */

/** An error for the user, announced as it appears (role=alert); nothing while there is none. */
export function ErrorText({ error, id }: { error?: string | null; id?: string }) {
  if (!error) return null
  return (
    <p id={id} class="error" role="alert">
      {error}
    </p>
  )
}

/** A table's column headers. */
export function TableHead({ cols }: { cols: readonly string[] }) {
  return (
    <thead>
      <tr>
        {cols.map((c) => (
          <th key={c} scope="col">
            {c}
          </th>
        ))}
      </tr>
    </thead>
  )
}

/** A readiness component's state, as /readyz reports it. */
export function HealthPill({ ok }: { ok: boolean }) {
  return <span class={`pill ${ok ? 'ok' : 'bad'}`}>{ok ? 'ok' : 'down'}</span>
}

/** A theme colour (styles.css) as it applies now, for what draws outside CSS: charts, the map's canvas. */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888'
}
