"""A local S3-compatible server (moto in server mode) that counts the requests it serves."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingS3:
    """moto's S3 on 127.0.0.1:<free port>; ``requests`` lists (method, path, query) of every call."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = DomainDispatcherApplication(create_backend_app)
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                self.requests.append((environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                      environ.get("QUERY_STRING", "")))
            return app(environ, start_response)

        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, counting, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.options = {"key": "testing", "secret": "testing",
                        "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def make_bucket(self, name: str) -> None:
        import boto3
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def gets(self, contains: str = "") -> list[str]:
        with self._lock:
            return [p for m, p, _ in self.requests if m == "GET" and contains in p]

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
