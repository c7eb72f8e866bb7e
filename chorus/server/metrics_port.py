"""``server.metrics_port``: ``/metrics`` alone on a port of its own, without a key, for Prometheus.

Where API keys are required, ``GET /metrics`` on the API port needs an admin key, which annotation-based scrapers
(``prometheus.io/port``) cannot send. This listener serves the same exposition on a second port and nothing else,
so the network decides who may scrape (Kubernetes: a NetworkPolicy lets only Prometheus reach that port, while
the API port stays behind keys). It runs in a daemon thread (the stdlib's threading HTTP server): a scrape never
waits on the event loop, and the event loop never waits on a scrape.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chorus.server.observability import ServerMetrics

log = logging.getLogger(__name__)


class MetricsListener:
    def __init__(self, metrics: ServerMetrics, host: str, port: int) -> None:
        exposition = metrics.exposition

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served on this port")
                    return
                body, content_type = exposition()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line each
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="chorus-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on port %d (/metrics, no key)", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
