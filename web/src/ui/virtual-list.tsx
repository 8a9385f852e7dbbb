import type { ComponentChildren } from 'preact'
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks'

/** Rows drawn above and below the visible ones, so a fast scroll shows no gap. */
const OVERSCAN = 8

/**
 * A list that draws only the rows in view: 10,000 devices cost what 30 do. Rows have one fixed height. Arrow
 * keys, Home and End move the focus between rows (each row renders one focusable element).
 */
export function VirtualList<T>(props: {
  items: readonly T[]
  rowHeight: number
  label: string
  row: (item: T, index: number) => ComponentChildren
  keyOf: (item: T) => string
}) {
  const { items, rowHeight } = props
  const box = useRef<HTMLUListElement>(null)
  const [top, setTop] = useState(0)
  const [height, setHeight] = useState(600)
  const focusAfter = useRef<number | null>(null)

  useEffect(() => {
    const el = box.current!
    const ro = new ResizeObserver(() => setHeight(el.clientHeight))
    ro.observe(el)
    return () => ro.disconnect()
  }, [])

  useLayoutEffect(() => {
    const i = focusAfter.current
    if (i === null) return
    focusAfter.current = null
    const el = box.current?.querySelector<HTMLElement>(`[data-index="${i}"] a, [data-index="${i}"] button`)
    el?.focus({ preventScroll: true })
  })

  const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN)
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + OVERSCAN)

  const move = (to: number) => {
    const i = Math.max(0, Math.min(items.length - 1, to))
    const el = box.current!
    if (i * rowHeight < el.scrollTop) el.scrollTop = i * rowHeight
    else if ((i + 1) * rowHeight > el.scrollTop + el.clientHeight)
      el.scrollTop = (i + 1) * rowHeight - el.clientHeight
    setTop(el.scrollTop)
    focusAfter.current = i
  }

  return (
    <ul
      ref={box}
      class="vlist"
      aria-label={props.label}
      onScroll={(e) => setTop(e.currentTarget.scrollTop)}
      onKeyDown={(e) => {
        const row = (e.target as HTMLElement).closest<HTMLElement>('[data-index]')
        if (!row) return
        const i = Number(row.dataset.index)
        const page = Math.max(1, Math.floor(height / rowHeight) - 1)
        const to =
          e.key === 'ArrowDown'
            ? i + 1
            : e.key === 'ArrowUp'
              ? i - 1
              : e.key === 'PageDown'
                ? i + page
                : e.key === 'PageUp'
                  ? i - page
                  : e.key === 'Home'
                    ? 0
                    : e.key === 'End'
                      ? items.length - 1
                      : null
        if (to === null) return
        e.preventDefault()
        move(to)
      }}
    >
      <li class="vspace" style={{ height: `${items.length * rowHeight}px` }} aria-hidden="true" />
      {items.slice(first, last).map((item, k) => {
        const i = first + k
        return (
          <li
            key={props.keyOf(item)}
            data-index={i}
            aria-setsize={items.length}
            aria-posinset={i + 1}
            class="vrow"
            style={{ top: `${i * rowHeight}px`, height: `${rowHeight}px` }}
          >
            {props.row(item, i)}
          </li>
        )
      })}
    </ul>
  )
}
