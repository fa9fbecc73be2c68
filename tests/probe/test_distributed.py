"""torch.distributed: two gloo ranks on the CPU share one run id; each records with its rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from traindoctor.store.reader import Store

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import os, sys
    import torch
    import torch.distributed as dist
    from traindoctor.probe import Probe
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(rank)
    with Probe(run="ddp", store=sys.argv[1], num_classes=2, layer_every=1) as probe:
        probe.watch(model.module, optimizer)
        for step in range(3):
            x, y = torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            local = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
            local.load_state_dict(model.module.state_dict())
            torch.nn.functional.cross_entropy(local(x), y).backward()
            print("LOCAL", step + 1, torch.sqrt(sum(p.grad.double().pow(2).sum() for p in local.parameters())).item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss, epoch=0)
        print("RUN", probe.run_id, flush=True)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_share_a_run_and_record_with_their_rank(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": "2"}
        processes.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs")], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=180) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    lines = [[line.split() for line in stdout.splitlines()] for stdout, _ in outputs]
    run_ids = {fields[1] for rank_lines in lines for fields in rank_lines if fields[0] == "RUN"}
    assert len(run_ids) == 1
    store = Store(tmp_path / "runs")
    assert store.run_ids() == list(run_ids)
    run_id = run_ids.pop()
    meta = store.run_meta(run_id)
    assert meta["status"] == "finished" and meta["env"]["world_size"] == 2
    scalars = store.scalars([run_id], rank=None)  # every rank, not just rank 0
    loss = scalars[scalars["name"] == "loss"]
    assert sorted(loss.groupby("rank")["step"].apply(sorted).to_dict().items()) == [(0, [1, 2, 3]), (1, [1, 2, 3])]
    assert loss.groupby("step")["value"].nunique().eq(2).all()  # different data per rank
    assert set(scalars.loc[scalars["name"] == "update_ratio", "rank"]) == {0, 1}
    # Under DDP each rank records its local gradient norm, taken before the all-reduce.
    for rank, rank_lines in enumerate(lines):
        local = {int(f[1]): float(f[2]) for f in rank_lines if f[0] == "LOCAL"}
        recorded = scalars[(scalars["name"] == "grad_norm") & scalars["layer"].isna() & (scalars["rank"] == rank)]
        assert dict(zip(recorded["step"], recorded["value"])) == pytest.approx(local, rel=1e-5)
