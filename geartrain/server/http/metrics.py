"""``/metrics``: the core's state and counters in Prometheus' text format.

Everything is read from the core at scrape time by one custom collector (no
instrumentation on the hot path beyond the core's own counters in
core/stats.py). Two families of names:

* ``geartrain_*``: jobs submitted and ended per function, priority and
  outcome; queue depth per priority; running jobs; workers; time in queue
  and run time as histograms; connections; kept results; store commit
  latency.
* gearman-exporter's names (``gearman_up``, ``gearman_version_info``,
  ``gearman_jobs``, ``gearman_jobs_running``, ``gearman_jobs_waiting``,
  ``gearman_workers``), computed as that exporter computes them from
  gearmand's ``status``, so dashboards made for it (Grafana 11423) work
  unchanged, without running the exporter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from geartrain.server.core.server import JobServer
from geartrain.server.core.stats import BUCKETS, OUTCOME_NAMES, Histogram

PRIORITIES = ("high", "normal", "low")


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*[repr(b) for b in BUCKETS], "+Inf"), h.counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out


class CoreCollector(Collector):
    """Reads a :class:`JobServer` (and the store committer's latencies)."""

    def __init__(self, core: JobServer, version: str,
                 store_latency: Callable[[], Histogram | None] = lambda: None) -> None:
        self.core = core
        self.version = version
        self.store_latency = store_latency

    def collect(self) -> Iterator[Metric]:
        core = self.core
        functions = list(core.functions.values())

        submitted = CounterMetricFamily("geartrain_jobs_submitted", "Jobs created (coalesced submits not "
                                        "counted), per function and priority",
                                        labels=["function", "priority"])
        ended = CounterMetricFamily("geartrain_jobs_ended", "Jobs that ended, per function, priority "
                                    "and outcome (completed, failed, exception, cancelled)",
                                    labels=["function", "priority", "outcome"])
        queued = GaugeMetricFamily("geartrain_jobs_queued", "Jobs waiting for a worker, per function and "
                                   "priority (epoch jobs not yet due excluded)",
                                   labels=["function", "priority"])
        scheduled = GaugeMetricFamily("geartrain_jobs_scheduled", "Epoch jobs not yet due",
                                      labels=["function"])
        running = GaugeMetricFamily("geartrain_jobs_running", "Jobs a worker is running", labels=["function"])
        workers = GaugeMetricFamily("geartrain_workers", "Connected workers that registered the function",
                                    labels=["function"])
        waited = HistogramMetricFamily("geartrain_job_queue_seconds", "Time from submit (or run-at time, or "
                                       "requeue) to the start of an attempt", labels=["function"])
        ran = HistogramMetricFamily("geartrain_job_run_seconds", "Time from an attempt's start to the job's "
                                    "end by its worker", labels=["function"])
        g_jobs = GaugeMetricFamily("gearman_jobs", "number of jobs queued or running", labels=["function"])
        g_running = GaugeMetricFamily("gearman_jobs_running", "number of running jobs", labels=["function"])
        g_waiting = GaugeMetricFamily("gearman_jobs_waiting",
                                      "number of jobs waiting for an available worker", labels=["function"])
        g_workers = GaugeMetricFamily("gearman_workers", "number of capable workers", labels=["function"])
        for f in functions:
            name = f.name.decode("utf-8", "replace")
            stats = f.stats
            for p, label in enumerate(PRIORITIES):
                submitted.add_metric([name, label], stats.submitted[p])
                queued.add_metric([name, label], f.queued[p] - f.dead[p])
                for o, outcome in enumerate(OUTCOME_NAMES):
                    ended.add_metric([name, label, outcome], stats.ended[p][o])
            scheduled.add_metric([name], f.scheduled)
            running.add_metric([name], f.running)
            workers.add_metric([name], len(f.workers))
            waited.add_metric([name], _buckets(stats.waited), stats.waited.sum)
            ran.add_metric([name], _buckets(stats.ran), stats.ran.sum)
            g_jobs.add_metric([name], f.total)
            g_running.add_metric([name], f.running)
            g_waiting.add_metric([name], f.total - f.running)
            g_workers.add_metric([name], len(f.workers))
        yield from (submitted, ended, queued, scheduled, running, workers, waited, ran)

        connections = GaugeMetricFamily("geartrain_connections", "Open Gearman connections "
                                        "(HTTP requests in progress included)")
        connections.add_metric([], len(core.peers))
        yield connections
        results = GaugeMetricFamily("geartrain_results_kept", "Results of ended jobs kept for look-up")
        results.add_metric([], len(core.results))
        yield results
        evicted = CounterMetricFamily("geartrain_results_evicted", "Results forgotten before their time "
                                      "because --result-max-count was reached")
        evicted.add_metric([], core.results.evicted)
        yield evicted
        latency = self.store_latency()
        if latency is not None:
            store = HistogramMetricFamily("geartrain_store_commit_seconds",
                                          "Time a store transaction took (group commit)")
            store.add_metric([], _buckets(latency), latency.sum)
            yield store

        up = GaugeMetricFamily("gearman_up", "is gearman up")
        up.add_metric([], 1)
        info = GaugeMetricFamily("gearman_version_info", "gearman version", labels=["version"])
        info.add_metric([self.version], 1)
        yield from (g_jobs, g_running, g_waiting, g_workers, up, info)


def registry_for(collector: CoreCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
