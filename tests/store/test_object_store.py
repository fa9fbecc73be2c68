"""Stores addressed by URL (#14), against a real S3 implementation the tests start (moto's
server mode on 127.0.0.1): locations, create-only segments, the reader's mirror, compaction,
liveness from the store's clock, the spool, and the CLI's import and listing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from tests.store.s3 import REPO, TcpProxy, s3_env, s3_server, s3_url  # noqa: F401 (fixtures)
from traindoctor.store.compact import compact_run
from traindoctor.store.errors import StoreError
from traindoctor.store.fs import Mirror, ObjectStore, parse_store, spool_root
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def _write(url: str, steps: range, *, flushes: int = 3, **kwargs) -> RunWriter:
    writer = RunWriter(url, background=False, **kwargs)
    for chunk in np.array_split(np.asarray(steps), flushes):
        writer.add_scalars(step=chunk, name="loss", value=chunk * 0.5)
        writer.flush()
    writer.close()
    return writer


def _keys(url: str) -> list[str]:
    return sorted(ObjectStore(parse_store(url)).list(""))


@pytest.mark.parametrize(("given", "protocol", "path", "url"), [
    ("s3://team-runs/cifar/", "s3", "team-runs/cifar", "s3://team-runs/cifar"),
    ("s3a://team-runs", "s3", "team-runs", "s3://team-runs"),
    ("gs://bucket/a/b", "gcs", "bucket/a/b", "gs://bucket/a/b"),
    ("az://container/runs", "abfs", "container/runs", "az://container/runs"),
    ("abfs://container@account.dfs.core.windows.net/runs", "abfs", "container/runs", "az://container/runs"),
    ("file:///tmp/some%20runs", None, "/tmp/some runs", "/tmp/some runs"),
    ("relative/runs", None, "relative/runs", "relative/runs"),
], ids=["s3", "s3a", "gs", "az", "abfs-account", "file-url", "plain-path"])
def test_locations_parse(given, protocol, path, url):
    location = parse_store(given)
    assert (location.protocol, location.path, location.url) == (protocol, path, url)


@pytest.mark.parametrize(("given", "message"), [
    ("ftp://host/runs", "unsupported store URL"),
    ("s3:///runs", "names no bucket"),
], ids=["unknown-scheme", "no-bucket"])
def test_bad_locations_fail_in_one_line(given, message):
    with pytest.raises(StoreError, match=message) as error:
        parse_store(given)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("url", "extra"), [("gs://bucket/runs", "gcs"), ("az://container/runs", "azure")],
                         ids=["gcs", "azure"])
def test_a_missing_extra_names_the_install(url, extra, tmp_path, monkeypatch):
    """gcsfs and adlfs are not dev dependencies: these schemes fail at open with the pip line."""
    monkeypatch.setenv("TRAINDOCTOR_CACHE_DIR", str(tmp_path))
    package = {"gcs": "gcsfs", "azure": "adlfs"}[extra]
    if importlib_available(package):
        pytest.skip(f"{package} is installed here")
    for opener in (lambda: RunWriter(url), lambda: Store(url)):
        with pytest.raises(StoreError, match=rf"pip install 'traindoctor\[{extra}\]'") as error:
            opener()
        assert "\n" not in str(error.value)


def importlib_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_an_unreachable_bucket_fails_in_one_line(s3_env, monkeypatch):
    with pytest.raises(StoreError, match="is unreachable") as missing:
        Store("s3://td-no-such-bucket/runs").run_ids()
    with pytest.raises(StoreError, match="is unreachable"):
        RunWriter("s3://td-no-such-bucket/runs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StoreError, match="is unreachable") as refused:
        Store("s3://td-bucket/runs").run_ids()
    assert "\n" not in str(missing.value) + str(refused.value)


def test_segments_are_one_create_only_put_each(s3_url):
    writer = _write(s3_url, range(1, 31), name="put")
    keys = _keys(s3_url)
    segments = [key for key in keys if "/scalars/" in key]
    assert len(segments) == 3 and not any(".tmp-" in key for key in keys), keys
    # A retried upload of a published name (an answer lost on the way back) never replaces it.
    objects = ObjectStore(parse_store(s3_url))
    before = objects.get(segments[0])
    assert objects.put_new(segments[0], b"not a parquet file") is False
    assert objects.get(segments[0]) == before
    assert objects.put_new(f"{writer.run_id}/scalars/new.parquet", b"x") is True


def test_the_reader_sees_every_row_once_and_compaction_keeps_them(s3_url, monkeypatch, tmp_path):
    writer = _write(s3_url, range(1, 101), flushes=5, name="roundtrip", config={"lr": 0.1})
    store = Store(s3_url)
    assert store.run_ids() == [writer.run_id]
    rows = store.scalars([writer.run_id])
    assert rows["step"].tolist() == list(range(1, 101))
    np.testing.assert_allclose(rows["value"], rows["step"] * 0.5)
    assert store.summaries()[0]["last_step"] == 100

    merged = compact_run(store, writer.run_id)
    assert merged["scalars"] == 5
    keys = _keys(s3_url)
    scalars = [key for key in keys if "/scalars/" in key]
    assert len(scalars) == 1 and scalars[0].split("/")[-1].startswith("c-"), keys
    assert f"{writer.run_id}/summary.json" in keys  # the catalog lives in the bucket too
    # Another machine (an empty read cache) sees the same rows, once, and the bucket's summary.
    monkeypatch.setenv("TRAINDOCTOR_CACHE_DIR", str(tmp_path / "other-machine"))
    fresh = Store(s3_url)
    assert fresh.scalars([writer.run_id])["step"].tolist() == list(range(1, 101))
    assert fresh.summaries()[0]["segments"]["scalars"] == [scalars[0].split("/")[-1]]


def test_a_reader_that_meets_a_deleted_piece_lists_again(s3_url):
    writer = _write(s3_url, range(1, 41), flushes=4, name="pieces")
    mirror = Mirror(parse_store(s3_url))
    stale = mirror.objects.list(writer.run_id)
    compact_run(Store(s3_url), writer.run_id)  # merged object first, pieces deleted last
    # The listing made before the compaction names pieces that are gone now.
    assert mirror._sync_run(writer.run_id, stale) is False
    mirror.sync([writer.run_id])
    local = sorted(path.name for path in (mirror.root / writer.run_id / "scalars").glob("*.parquet"))
    assert len(local) == 1 and local[0].startswith("c-")
    assert Store(s3_url).scalars([writer.run_id])["step"].tolist() == list(range(1, 41))


# Seconds without a new object after which the liveness test's run reads as crashed: a few
# flushes' worth, with room for a loaded test server.
STALE_AFTER_S = 5.0


@pytest.mark.slow
def test_liveness_comes_from_the_stores_clock(s3_url):
    """run.json's heartbeat_at is written once (by the writer's clock); a reader judges a running
    run by the newest LastModified of its objects."""
    writer = RunWriter(s3_url, name="alive", flush_every_s=0.3)
    try:
        store = Store(s3_url, stale_after_s=STALE_AFTER_S)
        deadline = time.monotonic() + 2 * STALE_AFTER_S
        step = 0
        while time.monotonic() < deadline:
            step += 1
            writer.add_scalars(step=step, name="loss", value=1.0)
            time.sleep(0.05)
        time.sleep(0.5)
        meta = store.run_meta(writer.run_id)
        assert meta["status"] == "running", (time.time(), meta["heartbeat_at"], step, writer._seq, writer.errors,
                                             writer._spool.keys(), writer._upload_failures)
        written = json.loads(ObjectStore(parse_store(s3_url)).get(f"{writer.run_id}/run.json"))
        assert time.time() - written["heartbeat_at"] > STALE_AFTER_S  # by run.json alone it would read as crashed
    finally:
        writer._stop.set()  # the process "dies": no close, no more objects
        writer._wake.set()
        writer._thread.join()
    time.sleep(STALE_AFTER_S + 1.5)  # + LastModified's one-second resolution
    assert Store(s3_url, stale_after_s=STALE_AFTER_S).run_meta(writer.run_id)["status"] == "crashed"


@pytest.mark.slow
def test_failed_uploads_wait_in_the_spool_and_arrive_once(s3_env, s3_url, monkeypatch, tmp_path):
    proxy = TcpProxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        writer = RunWriter(s3_url, name="spooled", background=False)
        proxy.down()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for start in (1, 11, 21):
                writer.add_scalars(step=np.arange(start, start + 10), name="loss", value=1.0)
                writer.flush()  # never raises: the spool keeps the segment
        spooled = sorted(p.name for p in writer._spool.folder.rglob("*.parquet"))
        assert len(spooled) == 3
        assert sum("segments are kept in" in str(w.message) for w in caught) == 1
        proxy.up()
        assert writer.drain_spool(deadline=time.monotonic() + 30) == 0
        writer.close()
    finally:
        proxy.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    rows = Store(s3_url).scalars([writer.run_id])
    assert rows["step"].tolist() == list(range(1, 31))
    assert not any(spool_root(parse_store(s3_url)).rglob("*.parquet"))


@pytest.mark.slow
def test_a_new_run_starts_while_the_store_does_not_answer(s3_env, s3_url, monkeypatch):
    """A store that refuses at start delays nothing a new run records: one warning, segments
    and run.json (with what watch() added) arrive once it answers. A resumed run id cannot
    number its attempt blind, so it still fails in one line."""
    proxy = TcpProxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries only wait here
    try:
        proxy.down()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            writer = RunWriter(s3_url, name="offline-start", config={"lr": 0.1}, background=False)
            writer.update_meta(env={"optimizer": {"type": "AdamW"}})
            writer.add_scalars(step=np.arange(1, 11), name="loss", value=1.0)
            writer.flush()  # never raises: the spool keeps it
            with pytest.raises(StoreError, match="is unreachable") as resumed:
                RunWriter(s3_url, run_id=writer.run_id)
        started = [str(w.message) for w in caught if "training goes on" in str(w.message)]
        assert len(started) == 1 and "is unreachable" in started[0] and "\n" not in started[0]
        assert "\n" not in str(resumed.value)
        proxy.up()
        writer.heartbeat()  # PUTs the run.json it could not write at start
        assert writer.drain_spool(deadline=time.monotonic() + 30) == 0
        writer.add_scalars(step=np.arange(11, 21), name="loss", value=0.5)
        writer.close()
    finally:
        proxy.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    store = Store(s3_url)
    assert store.run_ids() == [writer.run_id]
    assert store.scalars([writer.run_id])["step"].tolist() == list(range(1, 21))
    meta = store.run_meta(writer.run_id)
    assert (meta["name"], meta["status"], meta["config"]) == ("offline-start", "finished", {"lr": 0.1})
    assert meta["env"]["optimizer"] == {"type": "AdamW"}


def test_a_full_spool_drops_the_oldest_segments_and_records_them(s3_env, s3_url, monkeypatch):
    proxy = TcpProxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        writer = RunWriter(s3_url, name="full-spool", background=False, max_spool_bytes=1)
        proxy.down()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for start in (1, 11, 21):
                writer.add_scalars(step=np.arange(start, start + 10), name="loss", value=1.0)
                writer.flush()
            # A budget of one byte keeps only the newest segment.
            assert len(writer._spool.keys()) == 1
            assert [(d["rows"], d["table"]) for d in writer.dropped] == [(10, "scalars"), (10, "scalars")]
            proxy.up()
            writer.drain_spool(deadline=time.monotonic() + 30)
            writer.close()
    finally:
        proxy.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    store = Store(s3_url)
    assert store.scalars([writer.run_id])["step"].tolist() == list(range(21, 31))
    dropped = store.events([writer.run_id], kinds=["rows_dropped"])
    assert len(dropped) == 2 and all("spool" in detail for detail in dropped["detail"])
    assert [entry["rows"] for entry in store.run_meta(writer.run_id)["rows_dropped"]] == [10, 10]


@pytest.mark.slow
@pytest.mark.parametrize("next_process", ["reader", "writer"])
def test_a_spool_left_by_a_finished_process_is_uploaded_by_the_next_one(s3_env, s3_url, tmp_path, next_process):
    """The writer closes while the store is down; the next reader or writer of that store on the
    same machine uploads its spool."""
    proxy = TcpProxy(s3_env.port)
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(REPO / 'benchmarks')!r})
from traindoctor.store.segments import RunWriter
writer = RunWriter({s3_url!r}, name="orphan", background=False, close_timeout_s=1.0)
print(writer.run_id, flush=True)
sys.stdin.readline()  # the test takes the store down
writer.add_scalars(step=np.arange(1, 26), name="loss", value=2.0)
writer.close()
"""
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint}
    try:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        run_id = child.stdout.readline().strip()
        proxy.down()
        _, stderr = child.communicate("go\n", timeout=120)
        assert child.returncode == 0, stderr
        assert "uploaded by the next traindoctor process" in stderr
    finally:
        proxy.close()
    assert not any("/scalars/" in key for key in _keys(s3_url))
    if next_process == "writer":
        with RunWriter(s3_url, name="next", flush_every_s=0.2):  # its background thread drains the spool
            deadline = time.monotonic() + 30
            while not any(run_id in key and "/scalars/" in key for key in _keys(s3_url)):
                assert time.monotonic() < deadline, "the orphaned spool was not uploaded"
                time.sleep(0.2)
    rows = Store(s3_url).scalars([run_id])  # a reader drains it too, then reads
    assert rows["step"].tolist() == list(range(1, 26))


def _cli(*args: str) -> tuple[int, str]:
    from traindoctor.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def test_import_and_runs_and_diagnose_take_a_bucket(s3_url, tmp_path):
    source = tmp_path / "metrics.csv"
    source.write_text("step,split,name,value\n" + "".join(
        f"{step},train,loss,{2.3 * np.exp(-step / 40):.6f}\n" for step in range(1, 121)))
    code, out = _cli("import", "csv", str(source), "--store", s3_url, "--run", "from-csv")
    assert code == 0, out
    keys = _keys(s3_url)
    assert any(key.endswith("/run.json") for key in keys) and any("/scalars/" in key for key in keys)
    code, out = _cli("runs", "--json", "--store", s3_url)
    assert code == 0, out
    runs = json.loads(out)
    assert [(run["name"], run["last_step"]) for run in runs] == [("from-csv", 120)]
    code, out = _cli("diagnose", "from-csv", "--json", "--store", s3_url)
    assert code == 0, out
    assert json.loads(out)["runs"][0]["name"] == "from-csv"
    # The findings cache lives in the bucket too.
    assert any(key.endswith("/.findings.json") for key in _keys(s3_url))


def test_messages_name_the_bucket_not_the_local_mirror(s3_url):
    # They named the read cache's folder (~/.cache/traindoctor/stores/<hash>), a path the user never gave.
    code, out = _cli("runs", "--store", s3_url)
    assert (code, out.strip()) == (0, f"no runs in {s3_url}")
    _write(s3_url, range(1, 11), flushes=2, name="named")
    code, out = _cli("diagnose", "nosuch", "--store", s3_url)
    assert code == 2 and f"unknown run 'nosuch' in store {s3_url}" in out, out
    code, out = _cli("compact", "--store", s3_url)
    assert code == 0 and out.strip().endswith(f"compacted 1 of 1 runs in {s3_url}"), out
    code, out = _cli("watch", "--store", s3_url)
    assert code == 0 and out.strip() == f"no running runs in {s3_url}", out


def test_the_store_environment_variable_takes_a_url(s3_url, monkeypatch):
    writer = _write(s3_url, range(1, 11), flushes=1, name="by-env")
    monkeypatch.setenv("TRAINDOCTOR_STORE", s3_url)
    code, out = _cli("runs", "--json")
    assert code == 0, out
    assert [run["run_id"] for run in json.loads(out)] == [writer.run_id]


@pytest.mark.slow
def test_the_probe_records_into_a_bucket(s3_url):
    torch = pytest.importorskip("torch")
    from traindoctor import Probe

    def train(run: str, **kwargs) -> str:
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with Probe(run=run, store=s3_url, num_classes=3, **kwargs) as probe:
            probe.watch(model, optimizer)
            for step in range(20):
                loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss)
        return probe.run_id

    single = train("probe-s3")
    # Rank 0 of a two-rank job leaves compaction for later: it would first download every rank's segments.
    several = train("probe-s3-ranks", world_size=2, flush_every_steps=5)
    store = Store(s3_url)
    summaries = {summary["run_id"]: summary for summary in store.summaries()}
    assert (summaries[single]["name"], summaries[single]["status"], summaries[single]["last_step"]) == (
        "probe-s3", "finished", 20)
    assert summaries[several]["last_step"] == 20
    keys = _keys(s3_url)
    # Compacted on close, on the bucket: one object per table.
    assert sum(key.startswith(f"{single}/scalars/") for key in keys) == 1
    assert sum(key.startswith(f"{several}/scalars/") for key in keys) > 1
    assert len(store.scalars([single], names=["loss"])) == 20


def test_a_home_relative_store_path_is_expanded(tmp_path, monkeypatch):
    """``Probe(store="~/runs")`` and a quoted ``TRAINDOCTOR_STORE="~/runs"`` reach us with no shell to
    expand them: the store is under the home folder, not a folder named '~' here."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    writer = RunWriter("~/runs", name="home", background=False)
    writer.add_scalars(step=np.arange(1, 4), name="loss", value=1.0)
    writer.close()
    assert (tmp_path / "home" / "runs" / writer.run_id).is_dir() and not (tmp_path / "~").exists()
    assert Store("~/runs").run_ids() == [writer.run_id]
    from traindoctor.store.catalog import default_store_path

    monkeypatch.setenv("TRAINDOCTOR_STORE", "~/runs")
    assert default_store_path() == tmp_path / "home" / "runs"
