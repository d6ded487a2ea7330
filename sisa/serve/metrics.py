"""``/metrics``: the service's counters in the Prometheus text format (0.0.4)."""

from __future__ import annotations

import threading

# Prometheus histogram buckets for prediction latency (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY = "sisa_serve_prediction_latency_seconds"


class Metrics:
    """Counters for ``/metrics``, updated under :attr:`lock` by the worker and the
    prediction handlers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forgets = 0
        self.rows_retrained = 0
        self.shard_retrains = 0
        self.requests_done = 0
        self.requests_failed = 0
        self.predictions = 0
        self.predictions_during_forget = 0
        self.latency_buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0

    def observe_prediction(self, seconds: float, during_forget: bool) -> None:
        """Count one prediction request that took ``seconds``."""
        with self.lock:
            self.predictions += 1
            self.predictions_during_forget += during_forget
            self.latency_sum += seconds
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    self.latency_buckets[i] += 1

    def render(self, depth: int, age: float, forget_running: bool) -> str:
        """The exposition text, with the queue's ``depth`` and oldest request's ``age``
        (seconds) and whether a forget batch runs now."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, value) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"])

        with self.lock:
            metric("sisa_serve_queue_depth", "gauge", "Erasure requests queued or running.",
                   depth)
            metric("sisa_serve_oldest_request_age_seconds", "gauge",
                   "Age of the oldest queued or running erasure request.", round(age, 3))
            metric("sisa_serve_forgets_total", "counter", "Forget batches committed.",
                   self.forgets)
            metric("sisa_serve_shard_retrains_total", "counter",
                   "Shard retrains run by forget batches.", self.shard_retrains)
            metric("sisa_serve_rows_retrained_total", "counter",
                   "Rows retrained by forget batches.", self.rows_retrained)
            metric("sisa_serve_erasures_done_total", "counter", "Erasure requests done.",
                   self.requests_done)
            metric("sisa_serve_erasures_failed_total", "counter", "Erasure requests failed.",
                   self.requests_failed)
            metric("sisa_serve_forget_running", "gauge", "1 while a forget batch runs.",
                   int(forget_running))
            metric("sisa_serve_predictions_during_forget_total", "counter",
                   "Prediction requests answered while a forget batch ran.",
                   self.predictions_during_forget)
            lines += self._latency_histogram()
        return "\n".join(lines) + "\n"

    def _latency_histogram(self) -> list[str]:
        lines = [f"# HELP {LATENCY} Time to compute one prediction request.",
                 f"# TYPE {LATENCY} histogram"]
        lines += [f'{LATENCY}_bucket{{le="{b}"}} {c}'
                  for b, c in zip(BUCKETS, self.latency_buckets, strict=True)]
        lines += [f'{LATENCY}_bucket{{le="+Inf"}} {self.predictions}',
                  f"{LATENCY}_sum {self.latency_sum:.6f}", f"{LATENCY}_count {self.predictions}"]
        return lines
