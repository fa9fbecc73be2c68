"""What a bucket costs (#14): requests per rank per hour, and the Run page's data load from a bucket.

Against moto's S3 server on 127.0.0.1 (``benchmarks/s3_server.py``: it counts
every request it answers, by kind, and the bytes sent with them):

1. **Requests per rank per hour at the defaults.** One ``Probe`` (defaults:
   flush every 2 s or 256 steps, per-layer statistics every 50 steps) trains
   a small MLP at ``--steps-per-s`` (10: a 100 ms step, typical of the jobs
   that span nodes) for ``--seconds``, with an evaluation every 30 s, and
   closes (compaction on close included). The steady state's counts (from
   10 s after start) are scaled to an hour, then to 1,024 ranks (each rank
   writes its own objects); what start and close cost is printed apart.
2. **The Run page's data load** (``dashboard.data.load_run_view``'s queries:
   curves, lr, the update-ratio heatmap, events, run.json) for one run of
   ``--segments`` segments (100) written the same way to a local folder and
   to the bucket: local disk, the bucket from a new Store with an empty read
   cache (first open: every segment downloaded once), and from the
   dashboard's long-lived Store (its cache warm: one LIST per load), before
   and after compaction. Each is the best of ``--repeats``, in this
   process; ratios are against local disk in the same state.

Usage: python benchmarks/object_store.py [--seconds 60] [--steps-per-s 10] [--segments 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from s3_server import S3Server  # noqa: E402

RANKS_AT_SCALE = 1024
# S3 request-rate limits per prefix (AWS, "Best practices design patterns: optimizing Amazon S3
# performance"): 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per second.
S3_PUT_PER_S_PER_PREFIX = 3500
# S3 Standard list price per 1,000 PUT, COPY, POST or LIST requests (us-east-1, aws.amazon.com/s3/pricing).
S3_PUT_PRICE_PER_1000 = 0.005


def request_costs(server: S3Server, url: str, seconds: float, steps_per_s: float) -> dict[str, object]:
    """Requests of one Probe rank: at start (run.json, the LIST, the first heartbeat), in the
    steady state (a window from 10 s after start to ``seconds``: what an hour is made of) and
    at close (the last segments, run.json, the compaction)."""
    import torch

    from traindoctor import Probe

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    inputs, targets = torch.randn(256, 32), torch.randint(0, 10, (256,))
    server.counts(reset=True)
    started = time.monotonic()
    next_eval = started + 30.0
    window = None
    with Probe(run="request-costs", store=url, num_classes=10, config={"lr": 0.05}) as probe:
        probe.watch(model, optimizer)
        step = 0
        while time.monotonic() - started < seconds:
            step += 1
            batch = torch.randint(0, 256, (32,))
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)
            if time.monotonic() >= next_eval:
                model.eval()
                with torch.no_grad(), probe.evaluate("val") as evaluation:
                    logits = model(inputs)
                    evaluation.update(logits, targets, loss=torch.nn.functional.cross_entropy(logits, targets))
                model.train()
                next_eval += 30.0
            if window is None and time.monotonic() - started >= 10.0:
                window = (time.monotonic(), server.counts(reset=True))
            # Pace the loop: a step every 1/steps_per_s seconds.
            time.sleep(max(0.0, started + step / steps_per_s - time.monotonic()))
        steady = server.counts(reset=True)
        window_s = time.monotonic() - window[0]
    closing = server.counts()
    per_hour = 3600.0 / window_s
    return {
        "window_s": window_s, "steps": step, "start": window[1]["requests"], "close": closing["requests"],
        "steady": steady["requests"],
        "put_per_hour": steady["requests"].get("PUT", 0) * per_hour,
        "put_bytes_per_hour": steady["bytes"].get("PUT", 0) * per_hour,
        "other_per_hour": sum(n for kind, n in steady["requests"].items() if kind != "PUT") * per_hour,
    }


def write_run(store: str | Path, run_id: str, segments: int, steps_per_segment: int = 50, layers: int = 8) -> None:
    """A run of ``segments`` scalars segments (loss, lr, grad_norm every step; per-layer
    update_ratio and grad_norm every 10 steps), the same bytes wherever it goes."""
    from traindoctor.store.segments import RunWriter

    rng = np.random.default_rng(0)
    writer = RunWriter(store, run_id=run_id, name="hundred-segments", background=False, config={"lr": 0.1})
    names = tuple(f"layer{i}.weight" for i in range(layers))
    for index in range(segments):
        steps = np.arange(index * steps_per_segment + 1, (index + 1) * steps_per_segment + 1)
        writer.add_scalars(step=steps, name="loss", value=2.3 * np.exp(-steps / 2000) + rng.normal(0, 0.02, len(steps)))
        writer.add_scalars(step=steps, name="grad_norm", value=rng.lognormal(0, 0.1, len(steps)))
        writer.add_scalars(step=steps, name="lr", value=0.1, layer="group0")
        for step in steps[steps % 10 == 0]:
            writer.add_scalars(step=int(step), name="update_ratio", layer=names, value=rng.lognormal(-7, 0.3, layers))
            writer.add_scalars(step=int(step), name="grad_norm", layer=names, value=rng.lognormal(0, 0.3, layers))
        writer.flush()
    writer.add_event("config_lint", "weight decay on biases")
    writer.close()


def run_page_load(store_location, run_id: str) -> float:
    """Seconds for the Run page's queries (load_run_view without its tidy-up compaction), on a
    new Store of ``store_location``, or on the Store given (a long-lived one, as the dashboard's)."""
    from traindoctor.dashboard.data import curve_points, layer_heatmap, lr_points, run_events
    from traindoctor.store.reader import Store

    started = time.perf_counter()
    store = store_location if isinstance(store_location, Store) else Store(store_location)
    store.run_meta(run_id)
    curves = curve_points(store, [run_id])
    lr_points(store, [run_id])
    layer_heatmap(store, run_id, "update_ratio")
    run_events(store, run_id)
    assert len(curves), "no curve points"
    return time.perf_counter() - started


def best_of(repeats: int, measure, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        times.append(measure())
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps-per-s", type=float, default=10.0)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="traindoctor-object-store-"))
    os.environ["TRAINDOCTOR_CACHE_DIR"] = str(folder / "cache")
    with S3Server() as server:
        os.environ.update(server.environment())
        server.create_bucket("traindoctor-bench")
        url = "s3://traindoctor-bench/runs"

        costs = request_costs(server, url + "-costs", args.seconds, args.steps_per_s)
        put_per_s_at_scale = costs["put_per_hour"] * RANKS_AT_SCALE / 3600
        print(f"requests of one rank, Probe defaults, {args.steps_per_s:g} steps/s, {costs['steps']} steps: "
              f"start {costs['start']}, steady {costs['window_s']:.0f} s {costs['steady']}, close {costs['close']}")
        print(f"  steady state, per rank per hour: {costs['put_per_hour']:,.0f} PUTs, "
              f"{costs['put_bytes_per_hour'] / 1e6:,.1f} MB uploaded, {costs['other_per_hour']:,.0f} other requests")
        print(f"  {RANKS_AT_SCALE:,} ranks: {costs['put_per_hour'] * RANKS_AT_SCALE:,.0f} PUTs per hour = "
              f"{put_per_s_at_scale:,.0f} PUT/s ({put_per_s_at_scale / S3_PUT_PER_S_PER_PREFIX:.0%} of S3's "
              f"{S3_PUT_PER_S_PER_PREFIX:,} PUT/s per prefix), "
              f"{costs['put_bytes_per_hour'] * RANKS_AT_SCALE / 1e9:,.2f} GB per hour, "
              f"${costs['put_per_hour'] * RANKS_AT_SCALE / 1000 * S3_PUT_PRICE_PER_1000:,.2f} per hour in PUTs "
              f"at ${S3_PUT_PRICE_PER_1000} per 1,000")

        local = folder / "local"
        run_id = "20261130-000000-b10000"
        write_run(local, run_id, args.segments)
        write_run(url, run_id, args.segments)
        from traindoctor.store.compact import compact_run
        from traindoctor.store.fs import MIN_SYNC_INTERVAL_S
        from traindoctor.store.reader import Store

        mirror_root = Store(url).mirror.root

        def empty_cache():
            shutil.rmtree(mirror_root, ignore_errors=True)

        results = {}
        for state in ("before", "after"):
            # A new Store (a CLI command, a first page load): on the bucket, with an empty read cache.
            results[state, "local new"] = best_of(args.repeats, lambda: run_page_load(local, run_id))
            results[state, "bucket new"] = best_of(args.repeats, lambda: run_page_load(url, run_id),
                                                   before=empty_cache)
            # The dashboard's Store lives long: on the bucket each load pays one LIST (the sync, at
            # most once a second) and fetches nothing new.
            local_store, bucket_store = Store(local), Store(url)
            run_page_load(local_store, run_id)
            run_page_load(bucket_store, run_id)
            results[state, "local kept"] = best_of(args.repeats, lambda: run_page_load(local_store, run_id))
            results[state, "bucket kept"] = best_of(args.repeats, lambda: run_page_load(bucket_store, run_id),
                                                    before=lambda: time.sleep(MIN_SYNC_INTERVAL_S + 0.1))
            if state == "before":
                compact_run(Store(local), run_id)
                compact_run(Store(url), run_id)
        print(f"Run page data load, one run of {args.segments} segments (best of {args.repeats}; ratio: bucket / local disk):")
        for state, label in (("before", f"{args.segments} segments"), ("after", "compacted")):
            cells = []
            for kind, what in (("new", "new Store, empty cache"), ("kept", "dashboard's Store")):
                local_s, bucket_s = results[state, f"local {kind}"], results[state, f"bucket {kind}"]
                cells.append(f"{what}: local {local_s * 1000:5.0f} ms, bucket {bucket_s * 1000:5.0f} ms "
                             f"({bucket_s / local_s:4.1f}x)")
            print(f"  {label:13s} " + " | ".join(cells))
        print("  compaction makes it " + ", ".join(
            f"{results['before', key] / results['after', key]:.1f}x faster ({key})"
            for key in ("local new", "bucket new", "local kept", "bucket kept")))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
