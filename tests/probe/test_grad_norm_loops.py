"""Recorded gradient norms against a reference taken by hand from ``.grad``, loop style by loop style.

The probe takes the gradients' norms at the end of each backward pass (one
``_foreach_norm`` in the autograd engine's end-of-backward callback). Each
loop below is one a user writes; the reference is each tensor's ``.grad``
right after the step's last backward, before clipping and unscaling (divided
by the GradScaler's scale under AMP), which is what the probe promises
(``probe.core``'s module docstring). Every loop clips hard (max_norm 1e-3)
between backward and step, so a norm read after clipping is off by orders
of magnitude, not by rounding.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series
from tests.probe.test_grad_norm_batched import _FailsInBackward
from tests.probe.test_integrations import _loader

STEPS = 4
LAYER_EVERY = 2  # per-layer rows at steps 1, 2 and 4
CLIP = 1e-3


def _norm(grad: torch.Tensor) -> float:
    return float((grad.coalesce().values() if grad.is_sparse else grad).double().norm())


def _reference(named, scale: float) -> dict[str, float]:
    """Each tensor's gradient norm as backward left it (the unscaled gradient under a scaler)."""
    return {name: _norm(param.grad) / scale for name, param in named if param.grad is not None}


def _check(tmp_path, reference: dict[int, dict[str, float]], run: str | None = None, rel: float = 1e-5) -> None:
    """The run's global and per-layer grad_norm equal ``reference`` (step -> layer -> norm)."""
    meta, scalars, _, _ = read_run(tmp_path, run)
    assert meta["status"] == "finished"
    expected = {step: math.sqrt(sum(value ** 2 for value in layers.values())) for step, layers in reference.items()}
    assert series(scalars, "grad_norm") == pytest.approx(expected, rel=rel)
    cadence = {step for step in reference if step == 1 or step % LAYER_EVERY == 0}
    layer_rows = scalars[(scalars["name"] == "grad_norm") & scalars["layer"].notna()]
    assert set(layer_rows["step"]) == cadence
    for step in cadence:
        rows = layer_rows[layer_rows["step"] == step]
        assert dict(zip(rows["layer"], rows["value"])) == pytest.approx(reference[step], rel=rel), step


def _train(tmp_path, backward, *, model=None, optimizer=None, scaler=None, set_to_none=True, micro=1, device="cpu"):
    """A clipping loop: ``backward(model, x, y, scale)`` once per micro-batch, the reference, clip, step."""
    model = (model if model is not None else make_model()).to(device)
    optimizer = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.05)
    named = list(model.named_parameters())
    batches = make_batches(STEPS * micro)
    reference = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Probe(run="loop", store=tmp_path, layer_every=LAYER_EVERY) as probe:
            probe.watch(model, optimizer, scaler=scaler)
            for step in range(1, STEPS + 1):
                optimizer.zero_grad(set_to_none=set_to_none)
                for x, y in batches[(step - 1) * micro: step * micro]:
                    x, y = x.to(device), y.to(device)
                    backward(model, x, y, (lambda loss: scaler.scale(loss / micro)) if scaler else (lambda loss: loss / micro))
                reference[step] = _reference(named, scaler.get_scale() if scaler else 1.0)
                _clip_and_step(model, optimizer, scaler)
                probe.step(loss=1.0)
    assert [str(w.message) for w in caught if "traindoctor" in str(w.message)] == []  # nothing turned off
    return reference


def _plain(model, x, y, scaled):
    scaled(torch.nn.functional.cross_entropy(model(x), y)).backward()


def _clip_and_step(model, optimizer, scaler) -> None:
    """Clip hard (so a norm read after clipping is off by orders of magnitude), then step, through the scaler if any."""
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


# ------------------------------------------------------------------ faults found




def _caught_failure_then_backward(model, x, y, scaled, scale_failing=True):
    # At a step's first micro-batch: the head's gradient accumulates (its hook queues the
    # end-of-backward callback), then backward raises before its end, which drops that
    # backward's callbacks; the user skips the batch (zero_grad) and goes on.
    if all(param.grad is None for param in model.parameters()):
        try:
            (scaled if scale_failing else (lambda loss: loss))(torch.nn.functional.cross_entropy(
                model[3](torch.relu(model[1](_FailsInBackward.apply(model[0](x))))), y)).backward()
        except RuntimeError:
            pass
        model.zero_grad()
    _plain(model, x, y, scaled)


@pytest.mark.parametrize("amp", ["fp32", "grad_scaler", "grad_scaler_unscaled_failure"])
def test_a_backward_that_raised_and_was_caught_leaves_later_norms_taken_before_clipping(tmp_path, amp):
    # The dropped callback left the probe believing one was still queued, so later
    # backwards queued none and their norms were read in the optimizer pre-hook: after
    # clipping (the clip norm, 1e-3, was recorded), and under a scaler after unscale_
    # then divided by the scale again (256x too small). A failing backward of an unscaled
    # loss at step 1, before the scaler's first scale() (it sets its scale lazily), had the
    # step's scale read as 1: step 1 recorded 256x too large.
    scaler = None if amp == "fp32" else torch.amp.GradScaler("cpu", init_scale=256.0)
    backward = _caught_failure_then_backward
    if amp == "grad_scaler_unscaled_failure":
        def backward(model, x, y, scaled):
            _caught_failure_then_backward(model, x, y, scaled, scale_failing=False)
    reference = _train(tmp_path, backward, scaler=scaler, micro=1 if amp == "fp32" else 2)
    _check(tmp_path, reference)


def test_backward_with_create_graph_keeps_the_gradient_norms(tmp_path):
    # loss.backward(create_graph=True) (second-order methods, MAML) leaves gradients that
    # require grad: the norms' out= writes raised inside backward and turned grad_norm off.
    def create_graph(model, x, y, scaled):
        scaled(torch.nn.functional.cross_entropy(model(x), y)).backward(create_graph=True)

    reference = _train(tmp_path, create_graph)
    _check(tmp_path, reference)


# ------------------------------------------------------------ loop styles that hold


def _retain_graph_twice(model, x, y, scaled):
    loss = scaled(torch.nn.functional.cross_entropy(model(x), y))
    loss.backward(retain_graph=True)
    loss.backward()


def _autograd_grad_calls(model, x, y, scaled):
    # torch.autograd.grad accumulates into no .grad: never counted, before or after backward.
    x = x.clone().requires_grad_(True)
    loss = scaled(torch.nn.functional.cross_entropy(model(x), y))
    torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    (input_grad,) = torch.autograd.grad(loss, x, create_graph=True)  # a gradient penalty
    (loss + input_grad.pow(2).sum()).backward()
    torch.autograd.grad(model(x).sum(), x)


def _in_a_thread(model, x, y, scaled):
    loss = scaled(torch.nn.functional.cross_entropy(model(x), y))
    thread = threading.Thread(target=loss.backward)
    thread.start()
    thread.join()


class _Checkpointed(torch.nn.Module):
    """Layer ``b`` runs inside a checkpoint nested in a checkpoint and again outside it."""

    def __init__(self, reentrant: bool):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = torch.nn.Linear(6, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        self.reentrant = reentrant

    def forward(self, x):
        def inner(h):
            return checkpoint(lambda t: torch.tanh(self.b(t)), h, use_reentrant=self.reentrant)

        h = checkpoint(inner, self.a(x), use_reentrant=self.reentrant)
        return self.c(torch.tanh(self.b(h)))


class _MixedDtypes(torch.nn.Module):
    """A float64 layer, a float32 LayerNorm and a bfloat16 head in one optimizer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 16).double()
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 3).bfloat16()

    def forward(self, x):
        h = torch.relu(self.norm(self.a(x.double()).float()))
        return self.head(h.bfloat16()).float()


LOOPS = {
    # name: (backward per micro-batch, model factory, micro-batches, zero_grad(set_to_none=))
    "accumulate3": (_plain, make_model, 3, True),
    "accumulate3_zeroed_in_place": (_plain, make_model, 3, False),
    "retain_graph_twice": (_retain_graph_twice, make_model, 1, True),
    "autograd_grad_calls": (_autograd_grad_calls, make_model, 1, True),
    "backward_in_a_thread": (_in_a_thread, make_model, 2, True),
    "checkpoint_reentrant": (_plain, lambda: _Checkpointed(True), 2, True),
    "checkpoint_non_reentrant": (_plain, lambda: _Checkpointed(False), 2, True),
    "bf16_params": (_plain, lambda: _Cast(make_model().bfloat16()), 2, True),
    "mixed_dtypes": (_plain, _MixedDtypes, 2, False),
}


class _Cast(torch.nn.Module):
    """A model cast to one dtype, fed float32 inputs, giving float32 logits."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.to(next(self.inner.parameters()).dtype)).float()


@pytest.mark.parametrize("loop", list(LOOPS), ids=list(LOOPS))
def test_grad_norms_equal_the_gradients_backward_left(tmp_path, loop):
    backward, factory, micro, set_to_none = LOOPS[loop]
    reference = _train(tmp_path, backward, model=factory(), micro=micro, set_to_none=set_to_none)
    # bf16 gradients: the probe and the reference read the same bf16 values (float32 vs float64 sums).
    _check(tmp_path, reference, rel=1e-4 if "bf16" in loop or "mixed" in loop else 1e-5)


def test_checkpointed_loop_under_a_grad_scaler(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    reference = _train(tmp_path, _plain, model=_Checkpointed(True), scaler=scaler, micro=2)
    _check(tmp_path, reference)



def test_reentrant_checkpoints_take_the_norms_in_one_foreach_norm_per_backward(tmp_path):
    # Each reentrant checkpoint runs a backward nested in the outer one: the outer backward's
    # end-of-backward callback measures their gradients too, so the kernels the probe adds do
    # not grow with the number of checkpointed blocks.
    from tests.probe.test_grad_norm_batched import OpCounter

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(6)])
    head = torch.nn.Linear(8, 1)
    model = torch.nn.ModuleList([blocks, head])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 8, requires_grad=True)
    counter = OpCounter()
    with Probe(run="blocks", store=tmp_path, layer_every=1000) as probe:
        probe.watch(model, optimizer)
        for step in range(1, 4):
            h = x
            for block in blocks:
                h = checkpoint(lambda t, block=block: torch.tanh(block(t)), h, use_reentrant=True)
            optimizer.zero_grad()
            with counter if step == 3 else contextlib.nullcontext():
                head(h).pow(2).mean().backward()
            expected = _reference(model.named_parameters(), 1.0)
            optimizer.step()
            probe.step(loss=1.0)
    assert counter.counts["aten._foreach_norm"] == 1
    _, scalars, _, _ = read_run(tmp_path)
    assert series(scalars, "grad_norm")[3] == pytest.approx(math.sqrt(sum(v ** 2 for v in expected.values())), rel=1e-5)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_suite.sh machines)")
@pytest.mark.parametrize("loop", ["caught_failure_grad_scaler", "checkpoint_reentrant", "backward_in_a_thread"])
def test_cuda_backward_on_the_device_thread(tmp_path, loop):
    # On CUDA the engine runs backward (and the probe's hooks and callback) on its device thread,
    # and a reentrant checkpoint's inner backward runs there too.
    if loop == "caught_failure_grad_scaler":
        reference = _train(tmp_path, _caught_failure_then_backward, scaler=torch.amp.GradScaler("cuda", init_scale=256.0),
                           micro=2, device="cuda")
    else:
        backward, factory, micro, set_to_none = LOOPS[loop]
        reference = _train(tmp_path, backward, model=factory(), micro=micro, set_to_none=set_to_none, device="cuda")
    _check(tmp_path, reference)

@pytest.mark.parametrize("autograd", ["eager_engine", "compiled_autograd"])
def test_compiled_model_backward_through_aot_autograd(tmp_path, autograd):
    # Compiled autograd traces the backward, the probe's hooks included, with dynamo, which
    # refuses queue_callback there: the hook raised out of loss.backward() and stopped training.
    model = make_model()
    compiled = torch.compile(model, backend="aot_eager")  # AOTAutograd's joint graph, no C++ compiler needed

    def backward(_, x, y, scaled):
        if autograd == "eager_engine":
            _plain(compiled, x, y, scaled)
            return
        from torch._dynamo import compiled_autograd

        with compiled_autograd._enable(torch.compile(backend="aot_eager")):
            _plain(compiled, x, y, scaled)

    reference = _train(tmp_path, backward, model=model, micro=2)
    _check(tmp_path, reference)


def test_ddp_single_process_with_no_sync_accumulation(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already set up in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = make_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        calls = []

        def backward(_, x, y, scaled):  # all-reduce on the last micro-batch only
            calls.append(None)
            with ddp.no_sync() if len(calls) % 3 else contextlib.nullcontext():
                _plain(ddp, x, y, scaled)

        reference = _train(tmp_path / "store", backward, model=model, micro=3)
    finally:
        dist.destroy_process_group()
    _check(tmp_path / "store", reference)


class _Embedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(20, 8, sparse=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(1))


@pytest.mark.parametrize("optimizer", ["sgd_sparse_and_dense", "sparse_adam_alone"])
def test_sparse_embedding_gradients(tmp_path, optimizer):
    # Token ids repeat within a batch: the sparse gradient is uncoalesced; accumulated over 2 micro-batches.
    model = _Embedder()
    if optimizer == "sgd_sparse_and_dense":
        watched, other = torch.optim.SGD(model.parameters(), lr=0.1), None
    else:
        watched, other = torch.optim.SparseAdam([model.embedding.weight], lr=1e-2), torch.optim.Adam(
            model.head.parameters(), lr=1e-2)
    named = [(n, p) for n, p in model.named_parameters() if any(p is q for q in watched.param_groups[0]["params"])]
    generator = torch.Generator().manual_seed(0)
    reference = {}
    with Probe(run="sparse", store=tmp_path, layer_every=LAYER_EVERY) as probe:
        probe.watch(model, watched)
        for step in range(1, STEPS + 1):
            watched.zero_grad(set_to_none=step % 2 == 0)
            if other:
                other.zero_grad()
            for _ in range(2):
                ids, y = torch.randint(0, 20, (4, 5), generator=generator), torch.randint(0, 3, (4,), generator=generator)
                torch.nn.functional.cross_entropy(model(ids), y).backward()
            reference[step] = _reference(named, 1.0)
            torch.nn.utils.clip_grad_norm_(model.head.parameters(), CLIP)
            watched.step()
            if other:
                other.step()
            probe.step(loss=1.0)
    _check(tmp_path, reference)


@pytest.mark.parametrize("watched", ["generator", "discriminator"])
def test_gan_alternation_with_one_probe_on_one_optimizer(tmp_path, watched):
    # The discriminator's loss reaches the generator (no detach) and the generator's loss reaches the
    # discriminator: each network gets gradients in the other's backward too; each step zeroes its own.
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6))
    discriminator = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    model, optimizer = (generator, opt_g) if watched == "generator" else (discriminator, opt_d)
    named = list(model.named_parameters())
    noise = torch.Generator().manual_seed(0)
    reference = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grads_not_zeroed: see the report on GAN loops
        with Probe(run="gan", store=tmp_path, layer_every=LAYER_EVERY) as probe:
            probe.watch(model, optimizer)
            for step in range(1, STEPS + 1):
                z, real = torch.randn(8, 4, generator=noise), torch.randn(8, 6, generator=noise)
                fake = generator(z)
                opt_d.zero_grad()
                d_loss = (torch.nn.functional.softplus(-discriminator(real)).mean()
                          + torch.nn.functional.softplus(discriminator(fake)).mean())
                d_loss.backward(retain_graph=True)
                if watched == "discriminator":
                    reference[step] = _reference(named, 1.0)
                torch.nn.utils.clip_grad_norm_(discriminator.parameters(), CLIP)
                opt_d.step()
                if watched == "discriminator":
                    probe.step(loss=d_loss)
                opt_g.zero_grad()
                torch.nn.functional.softplus(-discriminator(fake)).mean().backward()
                if watched == "generator":
                    reference[step] = _reference(named, 1.0)
                torch.nn.utils.clip_grad_norm_(generator.parameters(), CLIP)
                opt_g.step()
                if watched == "generator":
                    probe.step(loss=1.0)
    _check(tmp_path, reference)


def test_parameters_frozen_unfrozen_and_added_between_steps(tmp_path):
    # Each change is made before the step's backward and reaches layers that backward
    # reaches after a hooked one (a later layer's hook sees the change first).
    model = make_model()
    optimizer = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("0.")], lr=0.05)
    named = list(model.named_parameters())
    reference = {}
    with Probe(run="changes", store=tmp_path, layer_every=LAYER_EVERY) as probe:
        probe.watch(model, optimizer)
        for step, (x, y) in enumerate(make_batches(STEPS + 2), start=1):
            if step == 2:
                model[1].weight.requires_grad_(False)
                model[1].weight.grad = None
            if step == 3:
                optimizer.add_param_group({"params": list(model[0].parameters()), "lr": 0.01})
            if step == 4:
                model[1].weight.requires_grad_(True)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            tracked = {id(p) for group in optimizer.param_groups for p in group["params"]}
            reference[step] = _reference([(n, p) for n, p in named if id(p) in tracked], 1.0)
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            probe.step(loss=1.0)
    _check(tmp_path, reference)


@pytest.mark.parametrize("change", ["add_param_group", "unfreeze", "unfreeze_grad_scaler"])
def test_a_head_that_joins_before_a_backward_is_measured_before_clipping(tmp_path, change):
    # Backward reaches the head before any hooked parameter, so its hook is made (at the first
    # hooked parameter's hook) after its gradient was accumulated: it used to be read in the
    # optimizer pre-hook, after clipping (and, under a scaler, after unscale_).
    model = make_model()
    head = list(model[3].parameters())
    if change == "add_param_group":
        optimizer = torch.optim.SGD([p for p in model.parameters() if all(p is not q for q in head)], lr=0.05)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for param in head:
            param.requires_grad_(False)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0) if "scaler" in change else None
    named = list(model.named_parameters())
    reference = {}
    with Probe(run="head", store=tmp_path, layer_every=LAYER_EVERY) as probe:
        probe.watch(model, optimizer, scaler=scaler)
        for step, (x, y) in enumerate(make_batches(STEPS), start=1):
            if step == 2:
                if change == "add_param_group":
                    optimizer.add_param_group({"params": head, "lr": 0.01})
                else:
                    for param in head:
                        param.requires_grad_(True)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            (scaler.scale(loss) if scaler else loss).backward()
            tracked = {id(p) for group in optimizer.param_groups for p in group["params"]}
            reference[step] = _reference([(n, p) for n, p in named if id(p) in tracked],
                                         scaler.get_scale() if scaler else 1.0)
            _clip_and_step(model, optimizer, scaler)
            probe.step(loss=1.0)
    assert set(reference[2]) == {name for name, _ in named}
    _check(tmp_path, reference)


# ------------------------------------------------------------------ integrations


@pytest.mark.slow
def test_lightning_callback_with_accumulation_and_gradient_clipping(tmp_path):
    # Lightning runs the last micro-batch's forward and backward inside optimizer.step(closure),
    # after the step pre-hook, and clips inside that closure after on_before_optimizer_step.
    lightning = pytest.importorskip("lightning.pytorch")
    from traindoctor.probe.integrations.lightning import ProbeCallback

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_model()
            self.reference = {}

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def on_before_optimizer_step(self, optimizer):  # before Lightning's clipping
            self.reference[self.trainer.global_step + 1] = _reference(self.named_parameters(), 1.0)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    module = Classifier()
    trainer = lightning.Trainer(
        max_steps=STEPS, accumulate_grad_batches=2, gradient_clip_val=CLIP, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ProbeCallback(run="lit", store=tmp_path, layer_every=LAYER_EVERY)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=_loader(make_batches(2 * STEPS)))
    assert sorted(module.reference) == list(range(1, STEPS + 1))
    _check(tmp_path, module.reference, run="lit")


@pytest.mark.slow
def test_transformers_callback_with_accumulation_and_max_grad_norm(tmp_path):
    transformers = pytest.importorskip("transformers")
    from traindoctor.probe.integrations.transformers import ProbeCallback

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 40, (8,), generator=generator), "labels": i % 3} for i in range(32)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=1e-3, max_grad_norm=CLIP, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   callbacks=[ProbeCallback(run="hf", store=tmp_path / "runs", layer_every=LAYER_EVERY)])
    reference = {}
    clip = trainer.accelerator.clip_grad_norm_

    def reading_then_clipping(parameters, *args, **kwargs):  # the Trainer clips through its accelerator
        parameters = list(parameters)
        reference[trainer.state.global_step + 1] = _reference(model.named_parameters(), 1.0)
        return clip(parameters, *args, **kwargs)

    trainer.accelerator.clip_grad_norm_ = reading_then_clipping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert sorted(reference) == list(range(1, STEPS + 1))
    _check(tmp_path / "runs", reference, run="hf")
    # The Trainer's own grad_norm (clip_grad_norm_'s total before clipping) is the same number.
    logged = {entry["step"]: entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry}
    _, scalars, _, _ = read_run(tmp_path / "runs", "hf")
    assert series(scalars, "grad_norm") == pytest.approx(logged, rel=1e-5)
