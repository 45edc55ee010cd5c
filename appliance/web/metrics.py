"""Counters, a latency histogram and images/s, rendered as Prometheus text (format 0.0.4)."""
import collections
import threading
import time

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PATHS = frozenset(["/", "/classify", "/health", "/metrics", "/stream.mjpg", "/frame.jpg"])
RATE_WINDOW = 10.0  # seconds over which images/s is measured
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs):
    if not pairs:
        return ""
    return "{" + ",".join('{}="{}"'.format(k, _escape(v)) for k, v in pairs) + "}"


class Metrics(object):
    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests = collections.Counter()   # (path, code) -> n
        self.errors = collections.Counter()     # reason -> n
        self.bucket_counts = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.images_total = 0
        self._recent = collections.deque()      # (time, images)

    def observe_request(self, path, code):
        path = path if path in PATHS else "other"
        with self._lock:
            self.requests[(path, str(int(code)))] += 1

    def observe_error(self, reason):
        with self._lock:
            self.errors[reason] += 1

    def observe_latency(self, seconds):
        with self._lock:
            self.latency_sum += seconds
            self.latency_count += 1
            for n, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[n] += 1

    def observe_images(self, count=1, now=None):
        now = time.time() if now is None else now
        with self._lock:
            self.images_total += count
            self._recent.append((now, count))

    def images_per_second(self, now=None):
        now = time.time() if now is None else now
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW:
                self._recent.popleft()
            count = sum(n for _, n in self._recent)
        span = min(RATE_WINDOW, max(now - self.started, 1e-3))
        return count / span

    def render(self, gauges=None, info=None, counters=None):
        """The text /metrics answers; ``gauges`` and ``counters`` name -> (help, value),
        ``info`` labels."""
        rate = self.images_per_second()
        with self._lock:
            requests = sorted(self.requests.items())
            errors = sorted(self.errors.items())
            buckets = list(self.bucket_counts)
            total, count, images = self.latency_sum, self.latency_count, self.images_total
        out = []

        def family(name, kind, helptext):
            out.append("# HELP {} {}".format(name, helptext))
            out.append("# TYPE {} {}".format(name, kind))

        family("oncolens_http_requests_total", "counter", "HTTP requests answered, by path and status")
        for (path, code), n in requests:
            out.append("oncolens_http_requests_total{} {}".format(
                _labels([("path", path), ("code", code)]), n))
        family("oncolens_classify_errors_total", "counter", "/classify requests refused, by reason")
        for reason, n in errors:
            out.append("oncolens_classify_errors_total{} {}".format(_labels([("reason", reason)]), n))
        family("oncolens_classify_latency_seconds", "histogram",
               "time from request to answer of successful /classify requests")
        for bound, n in zip(BUCKETS, buckets):
            out.append('oncolens_classify_latency_seconds_bucket{{le="{}"}} {}'.format(bound, n))
        out.append('oncolens_classify_latency_seconds_bucket{{le="+Inf"}} {}'.format(count))
        out.append("oncolens_classify_latency_seconds_sum {:.6f}".format(total))
        out.append("oncolens_classify_latency_seconds_count {}".format(count))
        family("oncolens_images_classified_total", "counter", "images run through the model")
        out.append("oncolens_images_classified_total {}".format(images))
        family("oncolens_images_per_second", "gauge",
               "images classified per second over the last {:g} s".format(RATE_WINDOW))
        out.append("oncolens_images_per_second {:.3f}".format(rate))
        family("oncolens_uptime_seconds", "gauge", "seconds since the server started")
        out.append("oncolens_uptime_seconds {:.1f}".format(time.time() - self.started))
        for kind, values in (("gauge", gauges), ("counter", counters)):
            for name, (helptext, value) in sorted((values or {}).items()):
                family(name, kind, helptext)
                out.append("{} {}".format(name, value))
        if info:
            family("oncolens_model_info", "gauge", "the model being served (always 1)")
            out.append("oncolens_model_info{} 1".format(_labels(sorted(info.items()))))
        return "\n".join(out) + "\n"
