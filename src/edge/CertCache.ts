/**
 * The certificate cache directory (`--cert-cache`; EDGE.md §1): the ACME account key and each
 * certificate with its key live here, readable by the relay's user only.
 *
 *  * missing → created `0700`;
 *  * not a directory, or owned by another user → the relay exits 1 (`certificate cache unusable`);
 *  * ours but open to group or others → tightened to `0700` (the caller logs it).
 *
 * Files are written `0600` through a temporary file in the same directory, flushed, then renamed
 * over the old one, so a crash leaves either the old file or the new one, never half a key.
 */
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** The cache cannot be used as the rules above require (the relay exits 1). */
export class CertificateCacheError extends Schema.TaggedError<CertificateCacheError>()("CertificateCacheError", {
  message: Schema.String
}) {}

export type PreparedCache = "created" | "tightened" | "ready"

const unusable = (dir: string, why: string) => new CertificateCacheError({ message: `certificate cache unusable: ${dir}: ${why}` })

const why = (error: unknown): string => {
  const e = error as NodeJS.ErrnoException
  return e.code ?? e.message
}

/** Applies the directory rules to `dir` as user `uid` (`undefined` where there are no uids). */
export const prepareCacheDir = (dir: string, uid: number | undefined): Effect.Effect<PreparedCache, CertificateCacheError> =>
  Effect.try({
    try: (): PreparedCache => {
      let stat: Fs.Stats
      try {
        stat = Fs.statSync(dir)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error
        Fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
        // mkdir's mode passes through the umask, which can only remove bits; say it exactly.
        Fs.chmodSync(dir, 0o700)
        return "created"
      }
      if (!stat.isDirectory()) throw unusable(dir, "not a directory")
      if (uid !== undefined && stat.uid !== uid) throw unusable(dir, `owned by uid ${stat.uid}, not the relay's uid ${uid}`)
      if ((stat.mode & 0o077) === 0) return "ready"
      Fs.chmodSync(dir, 0o700)
      return "tightened"
    },
    catch: (error) => error instanceof CertificateCacheError ? error : unusable(dir, why(error))
  })

/** The file's text, or `undefined` when it does not exist. */
export const readCacheFile = (path: string): Effect.Effect<string | undefined, CertificateCacheError> =>
  Effect.try({
    try: () => {
      try {
        return Fs.readFileSync(path, "utf8")
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
        throw error
      }
    },
    catch: (error) => unusable(path, why(error))
  })

/** Writes `text` to `path` with mode 0600, atomically (temporary file, fsync, rename, fsync dir). */
export const writeCacheFile = (path: string, text: string): Effect.Effect<void, CertificateCacheError> =>
  Effect.try({
    try: () => {
      const dir = Path.dirname(path)
      const temporary = Path.join(dir, `.${Path.basename(path)}.${randomBytes(6).toString("hex")}.tmp`)
      try {
        const fd = Fs.openSync(temporary, "wx", 0o600)
        try {
          Fs.writeFileSync(fd, text)
          Fs.fsyncSync(fd)
        } finally {
          Fs.closeSync(fd)
        }
        Fs.renameSync(temporary, path)
      } catch (error) {
        Fs.rmSync(temporary, { force: true })
        throw error
      }
      // The rename itself is durable once the directory is.
      const dirFd = Fs.openSync(dir, "r")
      try {
        Fs.fsyncSync(dirFd)
      } finally {
        Fs.closeSync(dirFd)
      }
    },
    catch: (error) => unusable(path, why(error))
  })
