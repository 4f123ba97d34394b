"""Request counters and latency histograms per served model, in Prometheus text format."""
from __future__ import annotations

import threading

# Upper bounds in milliseconds.
BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Series:
    __slots__ = ("requests", "errors_4xx", "errors_5xx", "buckets", "total_ms")

    def __init__(self) -> None:
        self.requests = self.errors_4xx = self.errors_5xx = 0
        self.buckets = [0] * len(BUCKETS_MS)
        self.total_ms = 0.0


class Metrics:
    """Counters of one workspace's endpoints, keyed by (endpoint, served model)."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Series] = {}
        self._lock = threading.Lock()

    def record(self, endpoint: str, served: str, status: int, elapsed_ms: float) -> None:
        key = (endpoint, served)
        s = self._series.get(key)
        if s is None:
            with self._lock:
                s = self._series.setdefault(key, Series())
        s.requests += 1
        if 400 <= status < 500:
            s.errors_4xx += 1
        elif status >= 500:
            s.errors_5xx += 1
        s.total_ms += elapsed_ms
        for i, bound in enumerate(BUCKETS_MS):
            if elapsed_ms <= bound:
                s.buckets[i] += 1
                break

    def drop(self, endpoint: str) -> None:
        with self._lock:
            for key in [k for k in self._series if k[0] == endpoint]:
                del self._series[key]

    def render(self, endpoint: str) -> str:
        """Prometheus exposition text for one endpoint."""
        with self._lock:
            items = sorted((k[1], s) for k, s in self._series.items() if k[0] == endpoint)
        out = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("request_count_total", "counter", "Requests answered, by served model.")
        for served, s in items:
            out.append(f'request_count_total{{endpoint="{endpoint}",served_model="{served}"}} {s.requests}')
        family("request_4xx_count_total", "counter", "Requests answered with a 4xx status.")
        for served, s in items:
            out.append(f'request_4xx_count_total{{endpoint="{endpoint}",served_model="{served}"}} {s.errors_4xx}')
        family("request_5xx_count_total", "counter", "Requests answered with a 5xx status.")
        for served, s in items:
            out.append(f'request_5xx_count_total{{endpoint="{endpoint}",served_model="{served}"}} {s.errors_5xx}')
        family("request_latency_ms", "histogram", "Latency of requests through the workspace, in milliseconds.")
        for served, s in items:
            labels = f'endpoint="{endpoint}",served_model="{served}"'
            running = 0
            for bound, n in zip(BUCKETS_MS, s.buckets):
                running += n
                out.append(f'request_latency_ms_bucket{{{labels},le="{bound}"}} {running}')
            out.append(f'request_latency_ms_bucket{{{labels},le="+Inf"}} {s.requests}')
            out.append(f"request_latency_ms_sum{{{labels}}} {s.total_ms:.3f}")
            out.append(f"request_latency_ms_count{{{labels}}} {s.requests}")
        return "\n".join(out) + "\n"
