import { useEffect, useRef } from 'preact/hooks'
import type { StreamEvent } from './stream'

/** The live stream's events, to whichever views are showing. */
const listeners = new Set<(e: StreamEvent) => void>()
/** Whether the current stream is listening: a view shown after its `ready` reads its data at once. */
let ready = false

/** A new stream is being opened: nothing is live until it says `ready`. */
export function streamOpening(): void {
  ready = false
}

export function publish(e: StreamEvent): void {
  if (e.type === 'ready') ready = true
  if (e.type === 'down') ready = false
  for (const l of listeners) l(e)
}

/** Calls the latest `fn` with each stream event while the calling view is shown. */
export function useStreamEvents(fn: (e: StreamEvent) => void): void {
  const ref = useRef(fn)
  ref.current = fn
  useEffect(() => {
    const l = (e: StreamEvent) => ref.current(e)
    listeners.add(l)
    return () => listeners.delete(l)
  }, [])
}

/**
 * Calls `fn` whenever the view must read its data: once the stream listens (at once if it already does) and
 * again after any gap in it. Reading after `ready` means no change committed in between is missed.
 */
export function useOnReady(fn: () => void): void {
  const ref = useRef(fn)
  ref.current = fn
  useEffect(() => {
    if (ready) ref.current()
  }, [])
  useStreamEvents((e) => {
    if (e.type === 'ready' || e.type === 'resync') ref.current()
  })
}
