"""The ``traindoctor`` command runs numpy with one OpenBLAS thread (issue 13's cold start: OpenBLAS
starts a thread per core when numpy is imported); the library and in-process calls leave threads alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CODE = """
import json, os, sys
from traindoctor.cli import main
{setup}
code = {call}
print(json.dumps([code, os.environ.get("OPENBLAS_NUM_THREADS")]))
"""


def blas_threads_after(setup: str, call: str, env: dict[str, str] | None = None) -> tuple[int, str | None]:
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", CODE.format(setup=setup, call=call)], capture_output=True,
                            text=True, timeout=120, env={**environment, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    code, threads = json.loads(result.stdout.strip().splitlines()[-1])
    return code, threads


@pytest.mark.parametrize(("setup", "call", "env", "expected"), [
    ("sys.argv = ['traindoctor', 'runs', '--store', {store!r}]", "main()", None, "1"),
    ("sys.argv = ['traindoctor', 'runs', '--store', {store!r}]", "main()", {"OPENBLAS_NUM_THREADS": "4"}, "4"),
    ("", "main(['runs', '--store', {store!r}])", None, None),
    ("import traindoctor.store.reader, traindoctor.diagnosis.engine", "0", None, None),
], ids=["the-command", "the-user-setting-wins", "an-in-process-call", "the-library"])
def test_only_the_command_itself_asks_for_one_blas_thread(tmp_path, setup, call, env, expected):
    store = str(tmp_path)
    code, threads = blas_threads_after(setup.format(store=store), call.format(store=store), env)
    assert code == 0 and threads == expected
