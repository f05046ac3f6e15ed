/**
 * Renders the Effect metrics (SPEC §8) as Prometheus text, through `@effect/opentelemetry` and the
 * OpenTelemetry Prometheus exporter. The exporter's own HTTP server never starts: the text is
 * served by `MetricsServer` on the loopback metrics listener.
 *
 * The Effect metric registry read is the one in the context this layer is built in (the global
 * default unless a test provides its own `Metric.MetricRegistry`).
 */
import * as OtelMetrics from "@effect/opentelemetry/OtelMetrics"
import * as Resource from "@effect/opentelemetry/Resource"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { ResourceMetrics } from "@opentelemetry/sdk-metrics"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metrics from "./Metrics.ts"

/**
 * Runs before every scrape, so gauges derived from state (connected binaries and phones,
 * buffered bytes) can be refreshed right before they are read. Defaults to nothing; the relay
 * provides its own when it builds `PrometheusExport.layer`.
 */
export const BeforeScrape = Context.Reference<Effect.Effect<void>>("pyrycode-relay/BeforeScrape", {
  defaultValue: () => Effect.void
})

export class PrometheusExport extends Context.Service<PrometheusExport, {
  /** The Prometheus text exposition (format 0.0.4) of every relay metric. */
  readonly scrape: Effect.Effect<string>
}>()("pyrycode-relay/PrometheusExport") {
  static readonly layer: Layer.Layer<PrometheusExport> = Layer.effect(
    PrometheusExport,
    Effect.gen(function*() {
      // Series exist only after their first update; every one must be visible at 0 from boot.
      yield* Metrics.touchAll
      const beforeScrape = yield* BeforeScrape
      const exporter = new PrometheusExporter({
        preventServerStart: true,
        withoutScopeInfo: true,
        withoutTargetInfo: true
      })
      // Same settings as the exporter's private serializer: no prefix, no timestamps, no
      // resource labels, no target_info, no otel_scope_* labels.
      const serializer = new PrometheusSerializer(undefined, false, undefined, true, true)
      const producer = yield* OtelMetrics.makeProducer("cumulative")
      yield* OtelMetrics.registerProducer(producer, () => exporter)

      const scrape = beforeScrape.pipe(
        Effect.andThen(Effect.promise(() => exporter.collect())),
        Effect.map(({ resourceMetrics }) => serializer.serialize(withoutUnits(resourceMetrics)))
      )
      return PrometheusExport.of({ scrape })
    })
  ).pipe(Layer.provide(Resource.layer({ serviceName: "pyrycode-relay" })))
}

/**
 * `@effect/opentelemetry` gives every instrument the unit "1", which the serializer writes as a
 * `# UNIT name 1` comment line. Our names carry no unit suffix, so the comment is only noise.
 */
const withoutUnits = (resourceMetrics: ResourceMetrics): ResourceMetrics => ({
  ...resourceMetrics,
  scopeMetrics: resourceMetrics.scopeMetrics.map((scopeMetrics) => ({
    ...scopeMetrics,
    metrics: scopeMetrics.metrics.map((metric) => ({
      ...metric,
      descriptor: { ...metric.descriptor, unit: "" }
    }))
  }))
})
