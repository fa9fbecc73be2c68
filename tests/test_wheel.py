"""The packaging contract (docs/design.md, "Layout"): the wheel installs one
package, ``traindoctor``, and works from a user's folder that has its own
``probe.py``, ``store/`` and ``dashboard.py``.

The wheel is built offline from a copy of the checkout (``pip wheel
--no-build-isolation --no-index``: setuptools comes from the test's own
environment), installed without dependencies into a fresh venv, and given the
test environment's packages through a ``.pth`` line. Python does not process
``.pth`` files inside a directory added that way, so the checkout's editable
install does not leak in: the run below uses the wheel's copy, and the tests
check that it does. The wheel also carries the sample runs, so ``traindoctor
demo`` works from it outside a clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

import traindoctor

REPO = Path(__file__).resolve().parents[1]
# Source folder → where its files land in the wheel (pyproject.toml's package-dir).
PACKAGE_DIRS = {
    "traindoctor": "traindoctor",
    "probe": "traindoctor/probe",
    "store": "traindoctor/store",
    "diagnosis": "traindoctor/diagnosis",
    "dashboard": "traindoctor/dashboard",
}
# What the copy of the checkout leaves out: version control, environments and
# build outputs (the copy keeps the checkout's own build/ and egg-info untouched).
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "artifacts", "runs", "*.egg-info", "__pycache__", ".pytest_cache",
)
RUN_NAME = "user-mlp"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def _quiet_pip_env() -> dict[str, str]:
    return {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source") / "traindoctor"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(out), "."], cwd=source, env=_quiet_pip_env())
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; dependencies come from this environment by a .pth line."""
    root = tmp_path_factory.mktemp("venv") / "user-env"
    # --without-pip skips ensurepip (seconds); this environment's pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root.parent)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=root.parent, env=_quiet_pip_env())
    new_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=root).strip())
    (new_site / "test-environment-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def _user_env(venv: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TRAINDOCTOR_STORE")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def test_wheel_holds_only_the_traindoctor_package(wheel):
    version = traindoctor.__version__
    assert wheel.name == f"traindoctor-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"traindoctor", f"traindoctor-{version}.dist-info"}
    # Every module of the five folders is packaged (a new sub-folder missing
    # from pyproject.toml's package list would silently be left out).
    expected = {f"{target}/{path.relative_to(REPO / folder).as_posix()}"
                for folder, target in PACKAGE_DIRS.items() for path in (REPO / folder).rglob("*.py")
                if "__pycache__" not in path.parts}
    assert expected - set(names) == set()


TRAIN_SCRIPT = f"""
import json, sys

from traindoctor import Probe
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
inputs, targets = torch.randn(64, 8), torch.randint(0, 3, (64,))
with Probe(run={RUN_NAME!r}, store="my-runs", config={{"lr": 0.1}}, num_classes=3, layer_every=5) as probe:
    probe.watch(model, optimizer)
    for step in range(20):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss=loss, epoch=step // 10)
    model.eval()
    with torch.no_grad(), probe.evaluate("val") as evaluation:
        logits = model(inputs)
        evaluation.update(logits, targets, loss=torch.nn.functional.cross_entropy(logits, targets))

import traindoctor
facts = {{"traindoctor_file": traindoctor.__file__,
          "shadowed_before": sorted(m for m in ("probe", "store", "dashboard") if m in sys.modules)}}
import probe, store
facts["probe"], facts["store"] = probe.MINE, store.MINE
try:
    import dashboard
except RuntimeError as error:
    facts["dashboard"] = str(error)
print(json.dumps(facts))
"""


def _user_folder(root: Path) -> Path:
    """A user's project whose own module names are the ones the repository's folders have."""
    user = root / "user"
    (user / "store").mkdir(parents=True)
    (user / "probe.py").write_text('MINE = "the user\'s probe.py"\n')
    (user / "store" / "__init__.py").write_text('MINE = "the user\'s store package"\n')
    (user / "dashboard.py").write_text('raise RuntimeError("the user\'s dashboard.py")\n')
    (user / "train.py").write_text(textwrap.dedent(TRAIN_SCRIPT))
    return user


def test_a_user_folder_records_and_diagnoses_with_the_installed_wheel(venv, tmp_path):
    user = _user_folder(tmp_path)
    env = _user_env(venv)
    python = str(venv / "bin" / "python")

    facts = json.loads(_run([python, "train.py"], cwd=user, env=env).strip().splitlines()[-1])
    assert Path(facts["traindoctor_file"]).resolve().is_relative_to(venv.resolve()), facts
    assert facts["shadowed_before"] == [], "traindoctor imported a top-level module named like the user's"
    assert facts["probe"] == "the user's probe.py"
    assert facts["store"] == "the user's store package"
    assert facts["dashboard"] == "the user's dashboard.py"

    # The console script, and `python -m`, which puts the user's folder first on sys.path.
    for command in ([str(venv / "bin" / "traindoctor")], [python, "-m", "traindoctor"]):
        report = json.loads(_run(command + ["diagnose", RUN_NAME, "--store", "my-runs", "--json"],
                                 cwd=user, env=env))
        assert [run["name"] for run in report["runs"]] == [RUN_NAME]
        assert isinstance(report["runs"][0]["findings"], list)


SAMPLE_STORE = REPO / "sample_runs" / "store"


def test_the_wheel_carries_the_sample_runs_without_their_caches(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    runs = sorted(SAMPLE_STORE.glob("*/run.json"))
    assert len(runs) >= 20
    expected = {f"traindoctor/sample_store/{path.relative_to(SAMPLE_STORE).as_posix()}"
                for path in [*runs, *SAMPLE_STORE.glob("*/*/*.parquet")]}
    assert expected - names == set()
    packaged = {name.rsplit("/", 1)[-1] for name in names if name.startswith("traindoctor/sample_store/")}
    assert not packaged & {"summary.json", ".findings.json", ".catalog.json"}  # caches, rebuilt on first read
    assert all(name.endswith((".parquet", "run.json")) for name in packaged)


def test_demo_serves_the_sample_runs_from_the_installed_wheel(venv, tmp_path):
    """`pip install traindoctor` + `traindoctor demo`, outside a clone: the page answers over HTTP and the
    store it serves (a copy of the installed sample runs, removed when it stops) lists them."""
    import re
    import socket
    import urllib.request

    from traindoctor.dashboard.serve import stop_process, wait_until_healthy

    user = tmp_path / "somewhere-else"
    user.mkdir()
    env = _user_env(venv)
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    process = subprocess.Popen([str(venv / "bin" / "traindoctor"), "demo", "--port", str(port)], cwd=user, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until_healthy("127.0.0.1", port, 120, process), process.stderr.read() if process.poll() else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/runs", timeout=30) as response:
            assert response.status == 200
            assert "<title>" in response.read().decode()
        first_line = process.stdout.readline()
        served = Path(re.search(r"dashboard for store (.+) at http", first_line).group(1))
        assert not served.resolve().is_relative_to(REPO), served
        listing = json.loads(_run([str(venv / "bin" / "traindoctor"), "runs", "--store", str(served), "--json"],
                                  cwd=user, env=env))
        assert len(listing) == len(list(SAMPLE_STORE.glob("*/run.json")))
    finally:
        code = stop_process(process, timeout_s=30)
    assert code in (0, 128 + 15, -15), process.stderr.read()[-2000:]
    assert not served.exists(), "the demo's copy of the sample runs outlived it"
    assert list(user.iterdir()) == []
