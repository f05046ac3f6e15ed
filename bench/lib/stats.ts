/** Small statistics helpers shared by the bench scripts. */

/** Nearest-rank percentile of an ascending-sorted array; NaN when empty. */
export const percentile = (sorted: ArrayLike<number>, p: number): number => {
  const n = sorted.length
  if (n === 0) return Number.NaN
  const rank = Math.min(n, Math.max(1, Math.ceil((p / 100) * n)))
  return sorted[rank - 1] ?? Number.NaN
}

/** Median of arbitrary numbers (mean of the two middle values for even counts). */
export const median = (values: ReadonlyArray<number>): number => {
  const s = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  const n = s.length
  if (n === 0) return Number.NaN
  const mid = n >> 1
  return n % 2 === 1 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2
}

/** Concatenate sample arrays into one ascending-sorted Float64Array. */
export const mergeSorted = (parts: ReadonlyArray<Float64Array>): Float64Array => {
  let total = 0
  for (const p of parts) total += p.length
  const out = new Float64Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out.sort()
}

export const round = (v: number, digits = 3): number => {
  const f = 10 ** digits
  return Math.round(v * f) / f
}
