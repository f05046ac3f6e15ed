/**
 * The relay's log output (SPEC §11): one JSON object per line on stderr by default
 * (`{"time","level","event",...annotations}`), or a readable line with `--log-format pretty`.
 * Only what `Log.ts` lets through reaches here: a fixed event name and allowlisted annotations.
 */
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as References from "effect/References"
import type { LogFormat, LogLevelName } from "../config/RelayConfig.ts"

const LEVELS: Record<LogLevelName, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error",
  fatal: "Fatal"
}

const eventOf = (message: unknown): string => {
  const first = Array.isArray(message) ? message[0] : message
  return typeof first === "string" ? first : String(first)
}

const prettyValue = (value: unknown): string =>
  typeof value === "string" && !/[\s"=]/.test(value) && value.length > 0 ? value : JSON.stringify(value)

export const makeLogger = (format: LogFormat, write: (line: string) => void) =>
  Logger.make<unknown, void>(({ date, fiber, logLevel, message }) => {
    const annotations = fiber.getRef(References.CurrentLogAnnotations)
    const event = eventOf(message)
    if (format === "json") {
      write(JSON.stringify({ time: date.toISOString(), level: logLevel.toLowerCase(), event, ...annotations }) + "\n")
      return
    }
    let line = `${date.toISOString()} ${logLevel.toUpperCase().padEnd(5)} ${event}`
    for (const [key, value] of Object.entries(annotations)) line += ` ${key}=${prettyValue(value)}`
    write(line + "\n")
  })

const toStderr = (line: string) => {
  process.stderr.write(line)
}

/** Replaces the default loggers and sets the minimum level. `write` defaults to stderr (tests capture it). */
export const layer = (options: {
  readonly format: LogFormat
  readonly level: LogLevelName
  readonly write?: ((line: string) => void) | undefined
}): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([makeLogger(options.format, options.write ?? toStderr)]),
    Layer.succeed(References.MinimumLogLevel, LEVELS[options.level])
  )

