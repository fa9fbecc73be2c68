"""A local S3-compatible server for tests and benchmarks: moto's server mode, counting requests.

``S3Server`` starts moto's WSGI app (the one ``moto_server`` runs) in a
child process on 127.0.0.1 and a free port, behind a middleware that counts
requests and request bytes by kind (PUT, GET, LIST, HEAD, DELETE, POST);
``counts()`` reads them back (``/_traindoctor/counts``). ``TcpProxy`` sits
between clients and the server and can refuse every connection for a while
(``down()`` / ``up()``): the store outage of issue #14's tests.

Usage as a script (what ``S3Server`` runs): python benchmarks/s3_server.py [--port 0]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

COUNTS_PATH = "/_traindoctor/counts"


def _kind(environ: dict) -> str:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if method == "GET" and (path.rstrip("/").count("/") <= 1 or "list-type" in query or "prefix=" in query):
        return "LIST"
    return method


class CountingApp:
    """WSGI middleware: counts requests and request-body bytes by kind."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests: Counter = Counter()
        self.bytes: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self.lock:
                body = json.dumps({"requests": dict(self.requests), "bytes": dict(self.bytes)}).encode()
                if environ["REQUEST_METHOD"] == "DELETE":
                    self.requests.clear()
                    self.bytes.clear()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        kind = _kind(environ)
        with self.lock:
            self.requests[kind] += 1
            self.bytes[kind] += int(environ.get("CONTENT_LENGTH") or 0)
        return self.app(environ, start_response)


def serve(port: int) -> None:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from werkzeug.serving import make_server

    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


class S3Server:
    """moto's S3 in a child process on 127.0.0.1 (a context manager).

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``, for ``AWS_ENDPOINT_URL``.
    """

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"moto server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def counts(self, reset: bool = False) -> dict:
        """{"requests": kind -> number, "bytes": kind -> request bytes} since start (or the last reset)."""
        request = urllib.request.Request(self.endpoint + COUNTS_PATH, method="DELETE" if reset else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def environment(self, endpoint: str | None = None) -> dict[str, str]:
        """AWS variables that point boto/s3fs at this server (or at ``endpoint``, a proxy in front of it)."""
        return {"AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket=name)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``down()`` refuses and cuts
    every connection until ``up()`` (a store that refuses requests)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.refusing = False
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
            with self._lock:
                self._open.discard(end)

    def down(self) -> None:
        self.refusing = True
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def up(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.down()
        self.listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    serve(parser.parse_args(argv).port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
