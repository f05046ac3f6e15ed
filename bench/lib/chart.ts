/** A tiny hand-rolled SVG line chart (no dependencies): side-by-side panels sharing one legend. */

export interface Series {
  readonly name: string
  readonly color: string
  /** [x, y] pairs; non-finite y values are skipped. */
  readonly points: ReadonlyArray<readonly [number, number]>
}

export interface Panel {
  readonly title: string
  readonly xLabel: string
  readonly yLabel: string
  /** Log-scaled x axis with a tick at every data x (e.g. 1, 4, 16, 64, 256). */
  readonly xLog: boolean
  readonly series: ReadonlyArray<Series>
}

const W = 460
const H = 330
const M = { left: 74, right: 24, top: 34, bottom: 52 }
const HEADER = 58

const esc = (s: string): string => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;")

/** 1, 2 or 5 × 10^k, at least `raw`. */
const niceStep = (raw: number): number => {
  const p = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p
  return 10 * p
}

const fmt = (v: number): string => {
  if (v === 0) return "0"
  if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toFixed(2)}M`
  if (Math.abs(v) >= 1e3) return `${+(v / 1e3).toFixed(1)}k`
  if (Math.abs(v) >= 10) return `${+v.toFixed(0)}`
  return `${+v.toPrecision(2)}`
}

const panelSvg = (p: Panel, ox: number, oy: number): string => {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const xs = [...new Set(p.series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b)
  const ys = p.series.flatMap((s) => s.points.map(([, y]) => y)).filter(Number.isFinite)
  const xMin = xs[0] ?? 1
  const xMax = xs[xs.length - 1] ?? 1
  const tx = (x: number): number => {
    if (xMax === xMin) return pw / 2
    return p.xLog ? ((Math.log(x) - Math.log(xMin)) / (Math.log(xMax) - Math.log(xMin))) * pw : ((x - xMin) / (xMax - xMin)) * pw
  }
  const step = niceStep(Math.max(...ys, 1e-9) * 1.1 / 5)
  const yMax = step * Math.max(1, Math.ceil((Math.max(...ys, 1e-9) * 1.05) / step))
  const ty = (y: number): number => ph - (y / yMax) * ph
  const out: Array<string> = [`<g transform="translate(${ox + M.left},${oy + M.top})">`]
  out.push(`<text x="${pw / 2}" y="-14" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`)
  for (let y = 0; y <= yMax + step / 2; y += step) {
    out.push(`<line x1="0" x2="${pw}" y1="${ty(y)}" y2="${ty(y)}" stroke="#e3e3e3"/>`)
    out.push(`<text x="-8" y="${ty(y) + 4}" text-anchor="end" font-size="11">${fmt(y)}</text>`)
  }
  for (const x of xs) {
    out.push(`<line x1="${tx(x)}" x2="${tx(x)}" y1="${ph}" y2="${ph + 5}" stroke="#333"/>`)
    out.push(`<text x="${tx(x)}" y="${ph + 18}" text-anchor="middle" font-size="11">${fmt(x)}</text>`)
  }
  out.push(`<line x1="0" x2="${pw}" y1="${ph}" y2="${ph}" stroke="#333"/><line x1="0" x2="0" y1="0" y2="${ph}" stroke="#333"/>`)
  out.push(`<text x="${pw / 2}" y="${ph + 40}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`)
  out.push(`<text transform="translate(${-56},${ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(p.yLabel)}</text>`)
  for (const s of p.series) {
    const pts = s.points.filter(([, y]) => Number.isFinite(y))
    const d = pts.map(([x, y], i) => `${i === 0 ? "M" : "L"}${tx(x).toFixed(1)},${ty(y).toFixed(1)}`).join(" ")
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`)
    for (const [x, y] of pts) {
      out.push(`<circle cx="${tx(x).toFixed(1)}" cy="${ty(y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}: x=${x}, y=${fmt(y)}`)}</title></circle>`)
    }
  }
  out.push("</g>")
  return out.join("\n")
}

/** Panels side by side under a title, a subtitle and a legend (series names of the first panel). */
export const renderChart = (title: string, subtitle: string, panels: ReadonlyArray<Panel>): string => {
  const width = W * panels.length
  const height = H + HEADER
  const legend = (panels[0]?.series ?? []).map((s, i) => {
    const x = 16 + i * 170
    return `<line x1="${x}" x2="${x + 26}" y1="48" y2="48" stroke="${s.color}" stroke-width="3"/>` +
      `<text x="${x + 32}" y="52" font-size="12">${esc(s.name)}</text>`
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="16" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="16" y="36" font-size="11" fill="#555">${esc(subtitle)}</text>`,
    ...legend,
    ...panels.map((p, i) => panelSvg(p, i * W, HEADER)),
    "</svg>",
    ""
  ].join("\n")
}
