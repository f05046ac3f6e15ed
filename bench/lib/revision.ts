/**
 * Another revision of the relay, for `compare.ts --against <rev>`: checked out into a temporary
 * git worktree, its dependencies installed as its own package-lock.json pins (the current
 * `node_modules` is linked instead when the lock files are identical), and run the way that
 * revision's own `npm start` runs it (its V8 flags, its entry, its build step if it has one).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { REPO_ROOT } from "./proc.ts"

export interface Revision {
  /** The commit, as `git rev-parse --short` prints it. */
  readonly commit: string
  readonly dir: string
  /** The relay command for `compare.ts` ({port} and {metricsPort} placeholders). */
  readonly command: string
  readonly remove: () => void
}

const run = (cmd: string, args: ReadonlyArray<string>, cwd: string): string =>
  execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim()

/** `exec node <flags> <entry>` at the end of a start script, and whether it builds first. */
const parseStart = (start: string): { flags: Array<string>; entry: string; builds: boolean } => {
  const m = /\bexec node((?:\s+--[^\s]+)*)\s+(\S+\.m?[jt]s)$/.exec(start)
  if (m === null) throw new Error(`start script not understood: ${start}`)
  return { flags: m[1]!.trim().split(/\s+/).filter((f) => f !== ""), entry: m[2]!, builds: start.includes("build:service") }
}

export const checkoutRevision = (rev: string, extraArgs: string): Revision => {
  const commit = run("git", ["rev-parse", "--short", `${rev}^{commit}`], REPO_ROOT)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `relay-${commit}-`))
  run("git", ["worktree", "add", "--detach", "--force", dir, commit], REPO_ROOT)
  const remove = () => {
    try {
      run("git", ["worktree", "remove", "--force", dir], REPO_ROOT)
    } catch {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  try {
    const sameLock = fs.readFileSync(path.join(dir, "package-lock.json"), "utf8") ===
      fs.readFileSync(path.join(REPO_ROOT, "package-lock.json"), "utf8")
    if (sameLock) fs.symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(dir, "node_modules"))
    else run("npm", ["ci", "--no-audit", "--no-fund", "--ignore-scripts=false"], dir)
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { scripts: { start: string } }
    const start = parseStart(pkg.scripts.start)
    if (start.builds) run("npm", ["run", "--silent", "build:service"], dir)
    const command = [
      path.join(dir, "node_modules/.bin/node"),
      ...start.flags,
      path.join(dir, start.entry),
      "--listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:{metricsPort}",
      extraArgs
    ].join(" ")
    return { commit, dir, command, remove }
  } catch (e) {
    remove()
    throw e
  }
}
