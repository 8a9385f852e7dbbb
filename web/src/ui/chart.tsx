import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import { cssVar } from './parts'

export interface ChartData {
  /** ms since the epoch */
  ts: number[]
  avg: Array<number | null>
  min: Array<number | null>
  max: Array<number | null>
}

/**
 * One key over time: its average per bucket as a line, min..max as a band behind it (a spike a bucket
 * averages away stays visible). Dragging across it asks for that range (`zoom`); the caller queries it at a
 * finer interval and passes the new data. Charts with the same `sync` share their cursor.
 */
export function TimeChart(props: {
  label: string
  data: ChartData
  range: { from: number; to: number }
  zoom: (from: number, to: number) => void
  sync: string
  height?: number
  /** The data is a sample, shown until the aggregate comes. */
  sampled?: boolean
}) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const zoomRef = useRef(props.zoom)
  zoomRef.current = props.zoom
  const sampled = useRef(props.sampled)
  sampled.current = props.sampled

  const aligned = (): uPlot.AlignedData => [props.data.ts, props.data.max, props.data.min, props.data.avg]

  useEffect(() => {
    const el = box.current!
    const line = cssVar('--accent')
    const band = cssVar('--band')
    const axis = {
      stroke: cssVar('--muted'),
      grid: { stroke: cssVar('--grid'), width: 1 },
      ticks: { show: false },
    }
    const opts: uPlot.Options = {
      width: el.clientWidth || 600,
      height: props.height ?? 220,
      ms: 1,
      legend: { live: true },
      cursor: { sync: { key: props.sync }, drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: true, range: () => [props.range.from, props.range.to] } },
      axes: [axis, { ...axis, size: 60 }],
      series: [
        {},
        { label: 'max', stroke: 'transparent', points: { show: false } },
        { label: 'min', stroke: 'transparent', points: { show: false } },
        { label: props.label, stroke: line, width: 1.5, spanGaps: false },
      ],
      bands: [{ series: [1, 2], fill: band }],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 5) return
            const from = u.posToVal(u.select.left, 'x')
            const to = u.posToVal(u.select.left + u.select.width, 'x')
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false)
            zoomRef.current(Math.floor(from), Math.ceil(to))
          },
        ],
        // The bench reads when the first chart was drawn, and the first with the aggregate.
        draw: [
          () => {
            performance.mark('iotcore:chart-drawn')
            if (!sampled.current) performance.mark('iotcore:chart-exact')
          },
        ],
      },
    }
    plot.current = new uPlot(opts, aligned(), el)
    const ro = new ResizeObserver(() =>
      plot.current?.setSize({ width: el.clientWidth, height: props.height ?? 220 }),
    )
    ro.observe(el)
    return () => {
      ro.disconnect()
      plot.current?.destroy()
      plot.current = null
    }
  }, [])

  useEffect(() => {
    const u = plot.current
    if (!u) return
    u.setData(aligned(), false)
    u.setScale('x', { min: props.range.from, max: props.range.to })
  }, [props.data, props.range.from, props.range.to])

  return <div ref={box} class="chart" role="img" aria-label={`${props.label} over time`} />
}
