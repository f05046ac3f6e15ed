/** Argument checks shared by the bench scripts: one clear line and exit 2 on bad input. */

export const makeArgChecks = (script: string) => {
  const fail = (msg: string): never => {
    process.stderr.write(`${script}: ${msg}\n`)
    process.exit(2)
  }
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v)
    return Number.isInteger(n) && n >= min ? n : fail(`--${name} must be an integer >= ${min} (got ${v})`)
  }
  /** The load only ever targets loopback. */
  const loopbackUrl = (url: string | undefined): string => {
    const u = url ?? fail("--url ws://127.0.0.1:PORT is required")
    if (!/^ws:\/\/127\.0\.0\.1:\d+$/.test(u)) fail(`--url must be ws://127.0.0.1:PORT (got ${u})`)
    return u
  }
  return { fail, int, loopbackUrl }
}
