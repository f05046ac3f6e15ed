import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { envName, flags, usage, version } from "../../src/config/Cli.ts"
import { HELP_DEFAULTS } from "../support/SpecDefaults.ts"

const lineOf = (flag: string) =>
  usage.split("\n").find((l) => l.startsWith(`  --${flag} `) || l.trimEnd() === `  --${flag}`)

describe("--help", () => {
  it("shows every flag's default as SPEC §9, PUSH.md §1 and EDGE.md §1 write it", () => {
    // Every flag has a literal here, so a new flag cannot show an unchecked default.
    assert.sameMembers(flags.map((f) => f.name), Object.keys(HELP_DEFAULTS))
    for (const [flag, literal] of Object.entries(HELP_DEFAULTS)) {
      const line = lineOf(flag)
      assert.isDefined(line, flag)
      assert.isTrue(line?.trimEnd().endsWith(`(default ${literal})`), `${flag}: ${line}`)
    }
  })

  it("names --help, --version, the variable rule and the environment-only variables", () => {
    assert.include(usage, "--help")
    assert.include(usage, "--version")
    assert.include(usage, "PYRYCODE_RELAY_<FLAG>")
    assert.include(usage, "PYRYCODE_RELAY_PRODUCTION")
    assert.include(usage, "PYRYCODE_RELAY_FCM_CREDENTIALS")
  })

  it("names the variable for every flag as upper snake case", () => {
    assert.strictEqual(envName("grace-period"), "PYRYCODE_RELAY_GRACE_PERIOD")
    assert.strictEqual(envName("trust-x-forwarded-for"), "PYRYCODE_RELAY_TRUST_X_FORWARDED_FOR")
    assert.strictEqual(envName("max-connections-per-ip"), "PYRYCODE_RELAY_MAX_CONNECTIONS_PER_IP")
    for (const f of flags) assert.strictEqual(envName(f.name), `PYRYCODE_RELAY_${f.name.toUpperCase().replaceAll("-", "_")}`)
  })

  it("version is package.json's", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
    assert.strictEqual(version, pkg.version)
    assert.match(version, /^\d+\.\d+\.\d+/)
  })
})
