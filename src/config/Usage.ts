/** `--help`'s text: the flags with their defaults (from `Flags.ts`), the syntax and the environment. */
import { ENV_PREFIX, flags } from "./Flags.ts"

const COLUMN = 36

export const usage: string = [
  "Usage: pyrycode-relay [flags]",
  "",
  "Relays WebSocket traffic between pyrycode phones (/v1/client) and their pyry binary (/v1/server).",
  "",
  "Flags (--flag value or --flag=value):",
  ...flags.map((f) => {
    const left = `  --${f.name}${f.boolean === true ? "" : " <value>"}`
    return `${left.padEnd(COLUMN)}${f.meaning} (default ${f.default})`
  }),
  `${"  --version".padEnd(COLUMN)}print the version and exit`,
  `${"  -h, --help".padEnd(COLUMN)}print this help and exit`,
  "",
  "Durations: 500ms, 30s, 2m, 1h or sums such as 1m30s. Sizes: bytes, or 256KiB, 4MiB.",
  "",
  `Environment: every flag can also be set as ${ENV_PREFIX}_<FLAG> in upper snake case`,
  `(--grace-period -> ${ENV_PREFIX}_GRACE_PERIOD; booleans take true or false). A flag wins over`,
  `its variable. Unknown ${ENV_PREFIX}_* variables are refused.`,
  `  ${ENV_PREFIX}_PRODUCTION=1   refuse to run as root, require an explicit --listen, and refuse any`,
  "                                effective capability other than CAP_NET_BIND_SERVICE (Linux)",
  `  ${ENV_PREFIX}_FCM_CREDENTIALS  Google service-account JSON key: turns push wake on (docs/push.md)`,
  "",
  "Invalid configuration exits 2 before anything is bound."
].join("\n")
