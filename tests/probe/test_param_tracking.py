"""The probe follows the optimizer's parameters as they change during training (issue 18, item 5).

Oracle: the global grad norm over every parameter holding a gradient when the
optimizer steps, computed beside the probe with plain per-tensor norms.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from traindoctor.probe import Probe
from tests.probe.conftest import make_batches, make_model, read_run, series

STEPS = 8
CHANGE_AT = 4  # the change happens during this step
NEW_LR = 0.02


def _first_layer(model):
    return list(model[0].parameters())


def _freeze(params):
    for param in params:
        param.requires_grad_(False)


def _unfreeze(params):
    for param in params:
        param.requires_grad_(True)


def _all_params_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def _optimizer_without_first_layer(model):
    return torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("0.")], lr=0.1)


def _add_first_layer(model, optimizer):
    _unfreeze(_first_layer(model))
    optimizer.add_param_group({"params": _first_layer(model), "lr": NEW_LR})


def _replace_head(model, optimizer):
    torch.manual_seed(7)
    model[3] = torch.nn.Linear(16, 3)
    optimizer.add_param_group({"params": list(model[3].parameters()), "lr": NEW_LR})


def _replace_head_and_group_list(model, optimizer):
    torch.manual_seed(7)
    model[3] = torch.nn.Linear(16, 3)
    optimizer.param_groups[0]["params"] = list(model.parameters())  # a new list: the old head leaves


def _extend_group_list(model, optimizer):
    _unfreeze(_first_layer(model))
    optimizer.param_groups[0]["params"].extend(_first_layer(model))


def _frozen_first_layer_all_params(model):
    _freeze(_first_layer(model))
    return _all_params_optimizer(model)


def _frozen_head_all_params(model):
    _freeze(model[3].parameters())
    return _all_params_optimizer(model)


def _frozen_first_layer_outside(model):
    _freeze(_first_layer(model))
    return _optimizer_without_first_layer(model)


# case: (set up the model and return its optimizer, change at the top of the step, change between its
# backward and optimizer.step, whether a param group is added). The top of the step is where unfreezing
# schedules and new heads happen; after the backward, the gradients exist before any hook could.
CASES = {
    "unfreeze_first_layer": (_frozen_first_layer_all_params, lambda m, o: _unfreeze(_first_layer(m)), None, False),
    # The head's gradient is accumulated first in the backward, before any other hook runs.
    "unfreeze_head": (_frozen_head_all_params, lambda m, o: _unfreeze(m[3].parameters()), None, False),
    "add_param_group": (_frozen_first_layer_outside, _add_first_layer, None, True),
    "add_param_group_after_backward": (
        _frozen_first_layer_outside, lambda m, o: _unfreeze(_first_layer(m)),
        lambda m, o: o.add_param_group({"params": _first_layer(m), "lr": NEW_LR}), True),
    "replace_head": (_all_params_optimizer, _replace_head, None, True),
    "extend_group_list": (_frozen_first_layer_outside, _extend_group_list, None, False),
    "replace_head_and_group_list": (_all_params_optimizer, _replace_head_and_group_list, None, False),
}


def _true_grad_norm(model, optimizer, scale: float) -> float:
    params = {id(p): p for p in model.parameters()}
    params.update({id(p): p for group in optimizer.param_groups for p in group["params"]})
    total = sum(p.grad.double().norm().item() ** 2 for p in params.values() if p.grad is not None)
    return math.sqrt(total) / scale


def _train(tmp_path, case: str, *, scaler: bool = False):
    setup, before_forward, after_backward, _ = CASES[case]
    model = make_model()
    optimizer = setup(model)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if scaler else None
    truth: dict[int, float] = {}
    first_layer_truth: dict[int, float] = {}
    head_truth: dict[int, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Nothing is flushed before the end: every value crosses the change in the buffers.
        with Probe(run=case, store=tmp_path, layer_every=1, flush_every_steps=1000, flush_every_s=3600,
                   strict=True) as probe:
            probe.watch(model, optimizer, scaler=grad_scaler)
            for step, (x, y) in enumerate(make_batches(STEPS), start=1):
                if step == CHANGE_AT and before_forward:
                    before_forward(model, optimizer)
                with torch.autocast("cpu", dtype=torch.float16, enabled=scaler):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                (grad_scaler.scale(loss) if scaler else loss).backward()
                if step == CHANGE_AT and after_backward:
                    after_backward(model, optimizer)
                scale = grad_scaler.get_scale() if scaler else 1.0
                truth[step] = _true_grad_norm(model, optimizer, scale)
                if model[0].weight.grad is not None:
                    first_layer_truth[step] = model[0].weight.grad.double().norm().item() / scale
                head = model[3].weight.grad
                head_truth[step] = None if head is None else head.double().norm().item() / scale
                if scaler:
                    grad_scaler.step(optimizer)
                    grad_scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=loss)
    ours = [str(w.message) for w in caught if "traindoctor" in str(w.message)]
    return read_run(tmp_path), truth, first_layer_truth, head_truth, ours


@pytest.mark.parametrize("case", sorted(CASES))
def test_grad_norm_counts_parameters_that_start_getting_gradients_after_watch(tmp_path, case):
    (meta, scalars, _, _), truth, first_layer_truth, head_truth, ours = _train(tmp_path, case)
    assert meta["status"] == "finished"
    assert ours == []  # every change here is one the probe can follow
    assert series(scalars, "grad_norm") == pytest.approx(truth, rel=1e-5)
    assert series(scalars, "grad_norm", layer="0.weight") == pytest.approx(first_layer_truth, rel=1e-5)
    # Per-layer values keep the name they were measured under: "3.weight" is the new head after a replacement.
    assert series(scalars, "grad_norm", layer="3.weight") == pytest.approx(
        {step: value for step, value in head_truth.items() if value is not None}, rel=1e-5)


@pytest.mark.parametrize("case", sorted(name for name, (*_, new_group) in CASES.items() if new_group))
def test_lr_is_kept_for_buffered_steps_and_a_new_group_gets_its_own_series(tmp_path, case):
    (_, scalars, _, _), _, _, _, ours = _train(tmp_path, case)
    assert ours == []
    assert series(scalars, "lr", layer="group0") == pytest.approx({step: 0.1 for step in range(1, STEPS + 1)})
    assert series(scalars, "lr", layer="group1") == pytest.approx({step: NEW_LR for step in range(CHANGE_AT, STEPS + 1)})
    # Per-layer statistics cover the new parameters from the step they were added.
    steps = set(scalars.loc[(scalars["name"] == "update_ratio"), "step"])
    assert steps == set(range(1, STEPS + 1))


@pytest.mark.parametrize("case", ["add_param_group", "add_param_group_after_backward", "unfreeze_head"])
def test_grad_norm_under_a_grad_scaler_counts_new_parameters_unscaled(tmp_path, case):
    (_, scalars, _, _), truth, _, _, ours = _train(tmp_path, case, scaler=True)
    recorded = series(scalars, "grad_norm")
    skipped = {step for step, value in series(scalars, "amp_skipped").items() if value}
    assert ours == []
    assert recorded == pytest.approx({step: value for step, value in truth.items() if step not in skipped}, rel=1e-3)


def test_a_parameter_swapped_into_a_group_list_in_place_is_tracked_from_the_next_flush_with_a_warning(tmp_path):
    model = make_model()
    optimizer = _all_params_optimizer(model)
    truth = {}
    with pytest.warns(RuntimeWarning, match=r"'3.weight', '3.bias' entered the optimizer by an in-place change") as caught:
        with Probe(run="swap", store=tmp_path, flush_every_steps=1, strict=True) as probe:
            probe.watch(model, optimizer)
            for step, (x, y) in enumerate(make_batches(STEPS), start=1):
                if step == CHANGE_AT:
                    old_weight, old_bias = model[3].weight, model[3].bias
                    model[3] = torch.nn.Linear(16, 3)
                    params = optimizer.param_groups[0]["params"]
                    # Same list, same length: only the flush-time comparison sees it.
                    params[[p is old_weight for p in params].index(True)] = model[3].weight
                    params[[p is old_bias for p in params].index(True)] = model[3].bias
                torch.nn.functional.cross_entropy(model(x), y).backward()
                truth[step] = _true_grad_norm(model, optimizer, 1.0)
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=1.0)
    assert len([w for w in caught if "in-place change" in str(w.message)]) == 1
    _, scalars, _, _ = read_run(tmp_path)
    recorded = series(scalars, "grad_norm")
    after = {step: value for step, value in truth.items() if step > CHANGE_AT}
    assert {step: recorded[step] for step in after} == pytest.approx(after, rel=1e-5)


def test_gradients_outside_the_optimizer_are_named_in_one_warning(tmp_path):
    model = make_model()
    optimizer = _all_params_optimizer(model)
    with pytest.warns(RuntimeWarning, match=r"'3.weight', '3.bias' of the model get gradients but are not in the "
                                            r"optimizer") as caught:
        with Probe(run="outside", store=tmp_path, flush_every_steps=2) as probe:
            probe.watch(model, optimizer)
            for step, (x, y) in enumerate(make_batches(STEPS), start=1):
                if step == CHANGE_AT:
                    model[3] = torch.nn.Linear(16, 3)  # replaced, but the optimizer is not told
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)
                probe.step(loss=1.0)
    assert len([w for w in caught if "not in the optimizer" in str(w.message)]) == 1


def test_lr_turned_off_later_keeps_the_values_of_steps_already_buffered(tmp_path, monkeypatch):
    model = make_model()
    optimizer = _all_params_optimizer(model)
    original = Probe._read_lrs
    with pytest.warns(RuntimeWarning, match="'lr' failed"):
        with Probe(run="lr", store=tmp_path, flush_every_steps=1000, flush_every_s=3600) as probe:
            probe.watch(model, optimizer)
            for step, (x, y) in enumerate(make_batches(STEPS), start=1):
                if step == CHANGE_AT:
                    monkeypatch.setattr(Probe, "_read_lrs", lambda self, lrs: 1 / 0)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                optimizer.zero_grad()
                probe.step(loss=1.0)
    monkeypatch.setattr(Probe, "_read_lrs", original)
    _, scalars, _, _ = read_run(tmp_path)
    assert sorted(series(scalars, "lr", layer="group0")) == list(range(1, CHANGE_AT))
    assert sorted(series(scalars, "loss")) == list(range(1, STEPS + 1))


@pytest.mark.parametrize("wrap", ["compiled", "data_parallel"])
def test_a_compiled_or_wrapped_model_records_the_eager_models_layer_names(tmp_path, wrap):
    """torch.compile prefixes every parameter name with '_orig_mod.', (Distributed)DataParallel
    with 'module.': the layers are recorded under the model's own names, as in an eager run."""
    model = make_model()
    eager = {name for name, _ in model.named_parameters()}
    watched = torch.compile(model, backend="eager") if wrap == "compiled" else torch.nn.DataParallel(model)
    assert all(name.split(".", 1)[0] in ("_orig_mod", "module") for name, _ in watched.named_parameters())
    optimizer = _all_params_optimizer(watched)
    with Probe(run=wrap, store=tmp_path, layer_every=1, flush_every_steps=2) as probe:
        probe.watch(watched, optimizer)
        for x, y in make_batches(3):
            torch.nn.functional.cross_entropy(watched(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=1.0)
    _, scalars, _, _ = read_run(tmp_path)
    layers = set(scalars.loc[scalars["name"] == "grad_norm", "layer"].dropna())
    assert layers == eager


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-on-purpose", "detached-by-mistake"])
def test_a_frozen_backbone_in_the_optimizer_is_a_hint_not_a_dead_layer_warning(tmp_path, frozen):
    """Regression: freezing a layer with requires_grad_(False) and handing model.parameters() to the
    optimizer (as fine-tuning scripts do) got a '2 parameter(s) never learn' warning; a layer that gets
    no gradient while it requires one (detached by mistake) still gets it."""
    from traindoctor import diagnose

    model = make_model()
    if frozen:
        _freeze(_first_layer(model))
    optimizer = _all_params_optimizer(model)
    with Probe(run="fine-tune", store=tmp_path, layer_every=1) as probe:
        probe.watch(model, optimizer)
        for x, y in make_batches(STEPS):
            optimizer.zero_grad()
            # Not frozen: the first layer is used detached, so it gets no gradient by mistake.
            features = model[0](x) if frozen else torch.nn.functional.linear(x, model[0].weight.detach(),
                                                                             model[0].bias.detach())
            loss = torch.nn.functional.cross_entropy(model[3](model[2](model[1](features))), y)
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)
    meta, _, _, _ = read_run(tmp_path)
    assert meta["env"]["model"]["frozen"] == (["0.weight", "0.bias"] if frozen else [])
    dead = [(f.severity, f.evidence["layers"]) for f in diagnose("fine-tune", store=tmp_path) if f.rule == "dead_layers"]
    assert dead == [("info" if frozen else "warning", ["0.bias", "0.weight"])]


class _TiedLM(torch.nn.Module):
    """A word LM whose output layer shares the input embedding, with a pooling-style query vector."""

    def __init__(self) -> None:
        super().__init__()
        self.query = torch.nn.Parameter(torch.zeros(1, 1, 8))
        self.embedding = torch.nn.Embedding(20, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 20)
        self.out.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.embedding(tokens) + self.query[0])))


def test_run_json_records_the_parameters_in_model_order_with_shapes_and_the_tied_ones(tmp_path):
    model = _TiedLM()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="tied", store=tmp_path, layer_every=1) as probe:
        probe.watch(model, optimizer)
        for _ in range(3):
            tokens = torch.randint(0, 20, (4, 5))
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 20), tokens.reshape(-1))
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)
    meta, _, _, _ = read_run(tmp_path)
    layout = meta["env"]["model"]
    assert layout["shapes"] == [["query", [1, 1, 8]], ["embedding.weight", [20, 8]], ["mix.weight", [8, 8]],
                                ["mix.bias", [8]], ["out.bias", [20]]]
    assert layout["tied"] == ["embedding.weight"]


class _DeadEndNet(torch.nn.Module):
    """A trunk and a head, with a small module whose output is computed (or not) and thrown away."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.trunk = torch.nn.Linear(8, 64)
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(64, 3)
        self.side = torch.nn.Linear(64, 1)  # 65 of 836 parameter elements
        self.gain = torch.nn.Parameter(torch.ones(1))  # a layer-scale gain forward() may forget

    def forward(self, x):
        if self.mode == "detached_into_a_module":
            # A CNN's features fed detached to its classifier: the trunk's output goes on, cut off.
            return self.head(self.act(self.trunk(x).detach()))
        hidden = torch.relu(self.trunk(x)) if self.mode == "detached" else self.act(self.trunk(x))
        if self.mode != "own_parameter_unused":
            hidden = hidden * self.gain
        if self.mode in ("discarded", "discarded_accumulated"):
            self.side(hidden)  # an N-BEATS last backcast: computed, never used by the loss
        if self.mode == "no_grad":
            with torch.no_grad():
                self.side(hidden)
        if self.mode == "detached":
            hidden = hidden.detach()  # the trunk cut off from the loss by mistake
        return self.head(hidden)


SIDE = ["side.bias", "side.weight"]


@pytest.mark.parametrize("mode, discarded, severity, layers", [
    ("discarded", ["side.weight", "side.bias"], "info", SIDE),
    ("discarded_accumulated", ["side.weight", "side.bias"], "info", SIDE),
    ("never_called", None, "warning", SIDE),
    ("no_grad", None, "warning", SIDE),
    # The module ran, but forward() never used this parameter of its own (a forgotten layer-scale gain).
    ("own_parameter_unused", None, "warning", ["gain"] + SIDE),
    # Another module took the trunk's output in after the .detach(): cut off, not a dead end, whatever its size.
    ("detached_into_a_module", None, "warning", ["gain", "side.bias", "side.weight", "trunk.bias", "trunk.weight"]),
    # Detached before a functional op: the probe cannot see it go on, but the trunk is most of what is trained.
    ("detached", ["trunk.weight", "trunk.bias"], "warning", ["gain"] + SIDE + ["trunk.bias", "trunk.weight"]),
])
def test_an_output_the_loss_never_uses_is_named_not_warned_about(tmp_path, mode, discarded, severity, layers):
    """Regression: N-BEATS's last block computes a backcast nothing uses, so its weights never get a gradient;
    five healthy N-BEATS runs got a '2 parameter(s) never learn' warning. The probe now notes, until the
    first optimizer step, which modules computed their output from their own parameters and which module
    outputs another module took in: a small module whose parameters still have no gradient and whose output
    nothing took in is a dead end of the graph (info). A module forward() never calls, one run under no_grad,
    a parameter its module never used and an output fed on after a .detach() are still warned about (a new
    user's break test: the first version called a forgotten position embedding and a CNN's detached features
    a dead end)."""
    from traindoctor import diagnose

    torch.manual_seed(0)
    model = _DeadEndNet(mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    micro_batches = 3 if mode == "discarded_accumulated" else 1
    with Probe(run="dead-end", store=tmp_path, layer_every=1) as probe:
        probe.watch(model, optimizer)
        for _ in range(12):
            optimizer.zero_grad()
            for _ in range(micro_batches):
                x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
            optimizer.step()
            probe.step(loss=loss)
    meta, _, _, _ = read_run(tmp_path)
    recorded = meta["env"]["model"].get("discarded_outputs")
    if mode == "detached":
        # The trunk's output is freed once relu has read it, and the allocator may hand its memory to the
        # detached tensor the head takes in: that reads as "taken in" (the check errs toward the warning).
        assert recorded in (None, discarded)
    else:
        assert recorded == discarded
    dead = [(f.severity, sorted(f.evidence["layers"])) for f in diagnose("dead-end", store=tmp_path)
            if f.rule == "dead_layers"]
    assert dead == [(severity, layers)]


class _WithScript(torch.nn.Module):
    """A model with a torch.jit.script submodule (ScriptModules take no forward hooks)."""

    def __init__(self):
        super().__init__()
        self.scripted = torch.jit.script(torch.nn.Linear(8, 8))
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.scripted(x)))


class _Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_a_watched_model_can_be_copied_saved_and_hold_a_script_module(tmp_path):
    """A new user's break test: copy.deepcopy(model) after watch() (an EMA copy) raised "cannot pickle
    '_thread.lock'" (the probe's hooks pulled the probe in), torch.save(model) likewise, and a model with a
    torch.jit.script submodule made watch() raise (ScriptModules take no forward hooks)."""
    import copy
    import io

    scripted = _WithScript()
    with Probe(run="scripted", store=tmp_path / "scripted") as probe:
        probe.watch(scripted, torch.optim.SGD(scripted.parameters(), lr=0.1))
    model = _Plain()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no probe warning either
        with Probe(run="copies", store=tmp_path / "copies") as probe:
            probe.watch(model, optimizer)
            ema = copy.deepcopy(model)
            buffer = io.BytesIO()
            torch.save(model, buffer)
            buffer.seek(0)
            loaded = torch.load(buffer, weights_only=False)
            for _ in range(3):
                x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                probe.step(loss=loss)
                ema(x), loaded(x)
    meta, scalars, _, _ = read_run(tmp_path / "copies")
    assert meta["status"] == "finished" and "discarded_outputs" not in meta["env"]["model"]
    assert len(series(scalars, "loss")) == 3


class _SparseGraphNet(torch.nn.Module):
    """A GCN layer taking a sparse adjacency matrix as an input, with a head; ``side`` is a dead end."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(16, 3)
        self.side = torch.nn.Linear(16, 1)

    def forward(self, x, adjacency):
        hidden = torch.relu(torch.sparse.mm(adjacency, self.conv(x)))
        self.side(hidden)
        return self.head(hidden)


def test_a_sparse_input_does_not_turn_the_dead_end_check_off(tmp_path):
    """A sparse tensor has no storage to point at (data_ptr raises): the check of outputs nothing uses must
    skip it, not fail with a warning on every graph network."""
    torch.manual_seed(0)
    model = _SparseGraphNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    index = torch.randint(0, 20, (2, 60))
    adjacency = torch.sparse_coo_tensor(index, torch.ones(60), (20, 20)).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with Probe(run="graph", store=tmp_path, layer_every=1) as probe:
            probe.watch(model, optimizer)
            for _ in range(4):
                x, y = torch.randn(20, 8), torch.randint(0, 3, (20,))
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x, adjacency), y)
                loss.backward()
                optimizer.step()
                probe.step(loss=loss)
    meta, _, _, _ = read_run(tmp_path)
    assert meta["env"]["model"]["discarded_outputs"] == ["side.weight", "side.bias"]
