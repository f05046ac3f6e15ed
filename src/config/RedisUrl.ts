/**
 * `--cluster-redis` (CLUSTER.md §1): `redis://[user:password@]host:port[/db]` or `rediss://…`.
 * The URL may carry a password, a credential: it is held as a `Redacted` from the moment it is
 * read, and the only text of it that is ever shown — in a refusal, in `relay started` — is
 * `describeRedisUrl`'s, which replaces any password with `***`. A URL that cannot be parsed is
 * never quoted at all (its password could be anywhere in it).
 */
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"

export type RedisUrl = Redacted.Redacted<string>

const WITHHELD = "(value withheld)"
const HINT = "use redis://[user:password@]host:port[/db] or rediss://…"

/** Why `raw` is not a Redis URL the relay accepts, without quoting anything secret; `undefined` when it is. */
export const redisUrlProblem = (raw: string): string | undefined => {
  if (!URL.canParse(raw)) return `is not a URL ${WITHHELD}; ${HINT}`
  const url = new URL(raw)
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") return `${describe(url)} is not a redis:// or rediss:// URL`
  if (url.hostname === "") return `${describe(url)} has no host; ${HINT}`
  if (url.search !== "" || url.hash !== "") return `${describe(url)} has a query or fragment (not supported); ${HINT}`
  if (!/^(\/(\d{1,2})?)?$/.test(url.pathname)) return `${describe(url)}: the path must be a database number (/0../15)`
  return undefined
}

export const parseRedisUrl = (raw: string): Result.Result<RedisUrl, string> => {
  const problem = redisUrlProblem(raw)
  return problem === undefined ? Result.succeed(Redacted.make(raw, { label: "cluster-redis" })) : Result.fail(problem)
}

const describe = (url: URL): string => {
  const user = url.username === "" ? "" : url.username
  const userInfo = url.password !== "" ? `${user}:***@` : user !== "" ? `${user}@` : ""
  return `${url.protocol}//${userInfo}${url.host}${url.pathname === "/" ? "" : url.pathname}`
}

/** The URL as it may be shown: any password replaced by `***`, query and fragment dropped. */
export const describeRedisUrl = (url: RedisUrl): string => {
  const raw = Redacted.value(url)
  return URL.canParse(raw) ? describe(new URL(raw)) : WITHHELD
}
