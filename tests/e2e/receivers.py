"""A plaintext OTLP/HTTP receiver for end-to-end tests that need to see exactly what the proxy
forwarded, or to hold a request in flight: it records each request's raw target and header lines
(so a duplicate is seen as a duplicate), counts requests received and answered, and answers 200 after
`delay` seconds with `response_headers` added."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingReceiver:
    def __init__(self, delay: float = 0.0, response_headers: list[tuple[str, str]] | None = None):
        self.requests: list[dict] = []
        self.received = 0
        self.answered = 0
        self.lock = threading.Lock()
        receiver = self
        extra = list(response_headers or [])

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append({"target": self.path, "headers": list(self.headers.items()), "body": body})
                    receiver.received += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                with receiver.lock:
                    receiver.answered += 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received_requests(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def header_values(self, index: int, name: str) -> list[str]:
        return [value for key, value in self.received_requests()[index]["headers"] if key.lower() == name.lower()]

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.received < count:
            assert time.monotonic() < deadline, f"the receiver got {self.received} of {count} requests"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
