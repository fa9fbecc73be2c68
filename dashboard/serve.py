"""Start the dashboard: ``streamlit run dashboard/app/server.py`` with safe defaults.

``traindoctor ui`` and ``traindoctor demo`` call :func:`run_app`. The server
binds 127.0.0.1 unless told otherwise, runs headless, shows no exception
details in the page, keeps CORS and XSRF protection on, leaves Streamlit's
agent API off, and accepts WebSocket connections only for an allow-list of
host names (``server.allowedHosts``: a page served under another name, as in
a DNS-rebinding attack, cannot talk to it). ``app/server.py`` adds what no
option can say (``app/security.py``): no framing by other sites, a content
security policy that keeps the page's requests on its own origin, and
WebSockets only from the server's own origin (scheme, host and port).
Nothing reaches outside the machine: no usage statistics, no welcome banner
(for which Streamlit asks the internet for this machine's public IP address).
The store folder travels on the command line (``-- --store DIR``), never
through the page.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path
from typing import Iterator, Sequence

from traindoctor.store.fs import display_location

# The Streamlit script (its pages), and the server that serves it (what `streamlit run` is given).
APP_PATH = Path(__file__).resolve().parent / "app" / "main.py"
SERVER_PATH = APP_PATH.with_name("server.py")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# How long open_browser waits for the server before giving up (seconds).
_BROWSER_WAIT_S = 30.0


def default_allowed_hosts(host: str) -> list[str]:
    """Host names a browser may use to reach a server bound to ``host``.

    Loopback binding: only the loopback names. Binding another address (an
    explicit ``--host``) adds that address and this machine's names and
    addresses; pass ``allowed_hosts`` for any other name (a proxy, a DNS alias).
    """
    allowed = list(LOOPBACK_HOSTS)
    if host in LOOPBACK_HOSTS:
        return allowed
    names = [host] if host not in ("0.0.0.0", "::", "") else []
    hostname = socket.gethostname()
    names += [hostname, socket.getfqdn()]
    try:
        names += socket.gethostbyname_ex(hostname)[2]
    except OSError:
        pass
    for name in names:
        if name and name not in allowed:
            allowed.append(name)
    return allowed


def build_command(store_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8501,
                  allowed_hosts: Sequence[str] | None = None) -> list[str]:
    """The ``python -m streamlit run`` command line for :func:`run_app`."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    if not host:
        raise ValueError("host must not be empty (use 127.0.0.1 for this machine only)")
    hosts = list(allowed_hosts) if allowed_hosts else default_allowed_hosts(host)
    command = [
        sys.executable, "-m", "streamlit", "run", str(SERVER_PATH),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.enableCORS", "true",
        "--server.enableXsrfProtection", "true",
        "--server.enableAgentApi", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--logger.hideWelcomeMessage", "true",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "viewer",
    ]
    for name in hosts:
        command += ["--server.allowedHosts", name]
    return command + ["--", "--store", display_location(store_path)]


def app_environment(store_path: str | os.PathLike) -> dict[str, str]:
    """The server's environment: the store named, no usage statistics.

    The server runs in this interpreter (``sys.executable``), where
    ``traindoctor`` is installed: no ``PYTHONPATH`` is needed.
    """
    env = dict(os.environ)
    env["TRAINDOCTOR_STORE"] = display_location(store_path)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    # ``python -m`` would put the current folder first on sys.path: a user's click.py or tornado.py there
    # replaced Streamlit's own and the server died at start (Python 3.11+ honours this; 3.10 ignores it).
    env["PYTHONSAFEPATH"] = "1"
    return env


class _Stopped(Exception):
    """A SIGTERM or SIGHUP reached ``run_app``: stop the server, then exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the server gets SIGTERM when ``traindoctor ui`` dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Terminate ``process`` (SIGTERM, then SIGKILL after ``timeout_s``); its exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def run_app(store_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8501,
            allowed_hosts: Sequence[str] | None = None, open_browser: bool = False) -> int:
    """Serve the dashboard on ``host:port`` until interrupted; returns the server's exit code.

    The server is a child process that never outlives this one: Ctrl-C,
    SIGTERM and SIGHUP stop it before ``run_app`` returns (128 + the signal
    number, the shell's convention), and on Linux it is also told to stop
    when this process dies by SIGKILL.

    Example:
        >>> run_app("traindoctor_runs")  # doctest: +SKIP
    """
    command = build_command(store_path, host=host, port=port, allowed_hosts=allowed_hosts)
    url_host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    url = f"http://{url_host}:{port}/runs"
    print(f"traindoctor: dashboard for store {display_location(store_path)} at {url}", flush=True)
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in forwarded} if in_main_thread else {}
    try:
        process = subprocess.Popen(command, env=app_environment(store_path),
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            if open_browser:
                threading.Thread(target=_open_when_ready, args=(url_host, port, url), daemon=True).start()
            return process.wait()
        except KeyboardInterrupt:
            # The shell's code for Ctrl-C; the server's own (-15: terminated by us) made the
            # command exit 241.
            stop_process(process)
            return 128 + signal.SIGINT
        except _Stopped as stopped:
            stop_process(process)
            return 128 + stopped.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_until_healthy(host: str, port: int, timeout_s: float, process: subprocess.Popen | None = None) -> bool:
    """Poll Streamlit's health endpoint until it answers; False on timeout or
    when ``process`` (the server) has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _open_when_ready(host: str, port: int, url: str) -> None:
    if wait_until_healthy(host, port, _BROWSER_WAIT_S):
        webbrowser.open(url)


@contextlib.contextmanager
def serving(store_path: str | os.PathLike, *, timeout_s: float = 60.0) -> Iterator[str]:
    """The real dashboard in a subprocess on a free loopback port, for scripts
    and tests; yields its base URL once it answers, stops it on exit."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    command = [sys.executable, "-m", "traindoctor.dashboard.serve", "--store", str(store_path), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until_healthy("127.0.0.1", port, timeout_s, process):
            raise RuntimeError(f"the dashboard did not answer on port {port} within {timeout_s:.0f} s "
                               f"(exit code {process.poll()})")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout_s=15)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m traindoctor.dashboard.serve [--store DIR] [--host H] [--port N]`` (the CLI offers the same)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m traindoctor.dashboard.serve")
    parser.add_argument("--store", default=None, help="the store folder (default: the CLI's, store/catalog.py's default_store_path)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--allowed-host", action="append", dest="allowed_hosts")
    args = parser.parse_args(argv)
    if args.store is None:
        from traindoctor.store.catalog import default_store_path

        args.store = default_store_path()
    return run_app(args.store, host=args.host, port=args.port, allowed_hosts=args.allowed_hosts)


if __name__ == "__main__":
    sys.exit(main())
