"""No host-device synchronisation on ordinary steps.

Between flushes, every way of reading a tensor's value on the host raises;
the training loop (probe.step, probe.log, an evaluation pass) must go through.
On a CUDA machine the same loop runs under torch.cuda.set_sync_debug_mode("error").
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series

READERS = ["item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__array__", "__repr__"]


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def host_reads_forbidden(monkeypatch, allowed: dict | None = None):
    """Every host read of a tensor's value raises, except while ``allowed["depth"]`` is positive."""
    allowed = allowed if allowed is not None else {"depth": 0}

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def raiser(self, *args, **kwargs):
            if allowed["depth"]:
                return original(self, *args, **kwargs)
            raise HostRead(f"Tensor.{name} called during a training step")
        return raiser

    with monkeypatch.context() as patch:
        for name in READERS:
            patch.setattr(torch.Tensor, name, forbid(name))
        original_to = torch.Tensor.to

        def to(self, *args, **kwargs):
            target = args[0] if args else kwargs.get("device")
            if (not allowed["depth"] and isinstance(target, (str, torch.device))
                    and torch.device(target).type == "cpu" and self.device.type != "cpu"):
                raise HostRead("Tensor.to('cpu') called during a training step")
            return original_to(self, *args, **kwargs)

        patch.setattr(torch.Tensor, "to", to)
        yield


def _train(probe, model, optimizer, batches, device="cpu"):
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad()
        probe.step(loss=loss, epoch=0)
        probe.log({"loss_copy": loss.detach()})
    model.eval()
    with probe.evaluate("val") as ev, torch.no_grad():
        for x, y in batches[:2]:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            ev.update(logits, y, loss=torch.nn.functional.cross_entropy(logits, y))
    model.train()


def test_the_reader_patch_catches_a_sync(monkeypatch):
    with host_reads_forbidden(monkeypatch), pytest.raises(HostRead):
        torch.ones(()).item()


def test_steps_between_flushes_read_nothing_on_the_host(tmp_path, monkeypatch):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = make_batches(12)
    # Large flush settings: no flush falls inside the patched window except the
    # one ending the evaluation, which must not read values before they land.
    probe = Probe(run="nosync", store=tmp_path, layer_every=3, flush_every_steps=10_000, flush_every_s=3600,
                  strict=True, handle_sigterm=False)
    probe.watch(model, optimizer)
    _train(probe, model, optimizer, batches[:2])  # first steps: lint, run.json updates
    probe.flush()
    evaluation = probe.evaluate("val")
    with host_reads_forbidden(monkeypatch):
        for x, y in batches[2:]:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
            probe.log({"loss_copy": loss.detach()})
        model.eval()
        evaluation.__enter__()
        with torch.no_grad():
            for x, y in batches[:3]:
                logits = model(x)
                evaluation.update(logits, y, loss=torch.nn.functional.cross_entropy(logits, y))
    evaluation.__exit__(None, None, None)  # ends the pass: its flush reads values, outside the window
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "loss")) == list(range(1, 13))
    assert sorted(series(scalars, "grad_norm")) == list(range(1, 13))
    assert len(series(scalars, "loss_copy")) == 12
    assert set(series(scalars, "accuracy", split="val")) == {2, 12}


def test_steps_with_frozen_parameters_read_nothing_on_the_host(tmp_path, monkeypatch):
    # The probe checks each step whether a frozen parameter was unfrozen: by flags, never by a tensor's value.
    model = make_model()
    for param in model[0].parameters():
        param.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = make_batches(8)
    probe = Probe(run="frozen", store=tmp_path, layer_every=3, flush_every_steps=10_000, flush_every_s=3600,
                  strict=True, handle_sigterm=False)
    probe.watch(model, optimizer)
    _train(probe, model, optimizer, batches[:2])
    probe.flush()
    with host_reads_forbidden(monkeypatch):
        for x, y in batches[2:]:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=1.0)
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "grad_norm")) == list(range(1, 9))


def test_flushes_with_live_checks_read_nothing_but_the_flush_copy(tmp_path, monkeypatch):
    """Flushes (each with a live check) inside the patched window: values are read on the host only where
    the probe writes a landed copy (``Probe._write``, the one read per flush there already was); the live
    checks judge those host numbers and read no tensor."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = make_batches(40)
    probe = Probe(run="live-nosync", store=tmp_path, num_classes=3, layer_every=3, flush_every_steps=4,
                  flush_every_s=3600, strict=True, handle_sigterm=False)
    probe.watch(model, optimizer)
    _train(probe, model, optimizer, batches[:2])
    probe.flush()
    allowed = {"depth": 0}
    write = Probe._write

    def landed_copy_only(self, transfer):
        allowed["depth"] += 1
        try:
            return write(self, transfer)
        finally:
            allowed["depth"] -= 1

    monkeypatch.setattr(Probe, "_write", landed_copy_only)
    with host_reads_forbidden(monkeypatch, allowed):
        for index, (x, y) in enumerate(batches[2:]):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            # From the 21st step on the loss is NaN (a tensor op, no read): a divergence the live checks raise.
            probe.step(loss=loss if index < 20 else loss * float("nan"))
            probe.log({"loss_copy": loss.detach()})
    probe.close()
    assert [(f.rule, f.severity) for f in probe.live_findings] == [("divergence", "critical")]
    _, scalars, events, _ = read_run(tmp_path)
    assert sorted(series(scalars, "loss")) == list(range(1, 41))
    assert (events["kind"] == "live_finding").sum() == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_loop_passes_sync_debug_mode_error(tmp_path):
    device = "cuda"
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    batches = make_batches(30)
    probe = Probe(run="cuda", store=tmp_path, layer_every=5, flush_every_steps=10_000, flush_every_s=3600,
                  strict=True, handle_sigterm=False)
    probe.watch(model, optimizer)
    _train(probe, model, optimizer, batches[:2], device)
    probe.flush()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches[2:]:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    probe.close()
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "loss")) == list(range(1, 31))
