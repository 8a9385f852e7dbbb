import { useEffect, useState } from 'preact/hooks'

/** The console's pages; routes live in the URL's fragment, so the server serves one page for all of them. */
export const PAGES = ['devices', 'map', 'charts', 'alerts', 'quarantine', 'operations'] as const
export type Page = (typeof PAGES)[number]

export interface Route {
  page: Page
  /** A device the page is about (#/charts/<id>, #/map/<id>, #/devices/<id>). */
  id?: string
  /** The page's setting for it, e.g. the charts' time range (#/charts/<id>/7d). */
  arg?: string
}

export function parseRoute(hash: string): Route {
  const [page, id, arg] = hash.replace(/^#\/?/, '').split('/')
  const p = (PAGES as readonly string[]).includes(page) ? (page as Page) : 'devices'
  return { page: p, id: id ? decodeURIComponent(id) : undefined, arg: arg || undefined }
}

export function href(page: Page, id?: string, arg?: string): string {
  return `#/${page}${id ? `/${encodeURIComponent(id)}` : ''}${id && arg ? `/${arg}` : ''}`
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash))
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash))
    addEventListener('hashchange', on)
    return () => removeEventListener('hashchange', on)
  }, [])
  return route
}
