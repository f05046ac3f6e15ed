/**
 * Where one relay's metrics live. Effect keeps metric series in the `Metric.MetricRegistry` of the
 * context that updates them, and its default registry is one per process: two relays in one
 * process (a test app, two listeners) would add to each other's counters. So each relay layer
 * gives itself, and everything it runs, a registry of its own — unless the host hands it one
 * with `RelayMetricRegistry`, to export the relay's series and its own together.
 */
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"

/** The registry a relay records into; `undefined` (the default) gives each relay a new one. */
export const RelayMetricRegistry = Context.Reference<Metric.MetricRegistry | undefined>(
  "pyrycode-relay/RelayMetricRegistry",
  { defaultValue: () => undefined }
)

/** `Metric.MetricRegistry` for one relay: the host's (`RelayMetricRegistry`), or a fresh one per build. */
export const relayMetricRegistry: Layer.Layer<never> = Layer.effectContext(
  RelayMetricRegistry.useSync((given) => Context.make(Metric.MetricRegistry, given ?? new Map()))
)
