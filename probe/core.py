"""The probe: hooks on the model and optimizer, an on-device step buffer, one copy per flush.

Where each statistic is measured (this is the contract the tests check):

- ``loss``: the value passed to ``probe.step(loss=...)`` (split ``train``).
- ``grad_norm`` (global, every step; per layer every ``layer_every`` steps):
  measured by a post-accumulate-grad hook on each parameter, i.e. right after
  each backward pass has accumulated into ``param.grad``. The last backward
  before the optimizer step wins, so under gradient accumulation it is the
  norm of the accumulated gradient, and it is always **before any clipping
  or ``scaler.unscale_`` the user does**. Under a GradScaler it is divided by
  the scale the backward used, so it is the norm of the *unscaled*
  gradient. Under DDP it is each rank's local gradient, before the all-reduce.
  Parameters whose gradient was not computed in a step contribute 0 to the
  global norm and get no per-layer row. The parameters are the optimizer's,
  as they are at each step: a parameter unfrozen after ``watch()``
  (``requires_grad_(True)``), one added with ``optimizer.add_param_group`` or
  put into a group's list is hooked when the probe sees the change, at the
  next backward or optimizer step, and counted from that step on (if its
  first gradient was accumulated before its hook existed, it is read at the
  end of that backward in a single-process run; in a multi-rank run, or when
  the change is first seen at the optimizer step, in the step pre-hook: after
  any clipping the user did in between). A
  parameter of the model that gets a gradient but is not in the optimizer is
  not counted; the probe warns once, naming it.
- ``weight_norm`` (per layer): ‖w‖ after the optimizer step.
- ``update_ratio`` (per layer): ‖w_after − w_before‖ / ‖w_before‖ across the
  actual optimizer step (step pre- and post-hooks); exact, or estimated from a
  fixed sample of elements for big models (see ``probe.statistics``).
- ``lr`` (layer ``group<i>``): each param group's lr as the optimizer step used it (read in
  the step pre-hook; on a skipped step, the lr when ``probe.step`` is called). A
  group added later gets the next ``group<i>`` from the step it is seen at.
- ``amp_scale``, ``amp_skipped``: the GradScaler's scale used by the step's
  backward, and 1.0 when the scaler skipped the optimizer step (its
  ``optimizer.step`` was never called). A skipped step records loss, lr and
  AMP values and an ``amp_step_skipped`` event, but no gradient or update
  statistics: its gradients were not finite and no update happened.
- ``grads_not_zeroed`` event: gradients kept from one optimizer step into the
  next (no ``zero_grad()``), seen on one witness parameter at the first
  backward after each step and judged at the flush (``probe.zeroing``);
  recorded once, at the first step of the stretch.

Per-step values go into a preallocated device tensor with in-place copies;
they reach the host in one non-blocking copy per flush (every
``flush_every_s`` seconds or ``flush_every_steps`` steps, checked in
``probe.step``). Non-finite losses are found on that host copy and produce
``nan_loss`` events then. Values already buffered are written under the
names (layers, lr groups) they were measured with, whatever changes later.

Every hook and callback the probe installs (gradient hooks, optimizer step
pre- and post-hooks, the autocast-detecting forward pre-hooks, the
integrations' callbacks) runs under the probe's ``StatisticGuard``: an error
turns that statistic off with one warning and training goes on
(``strict=True`` raises it instead).
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import json
import math
import numbers
import os
import operator
import sys
import threading
import time
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from traindoctor.probe import lint
from traindoctor.probe.evaluation import Evaluation, EvaluationResult
from traindoctor.probe.guard import (
    StatisticGuard, check_name, check_positive_int, checked_config, escaped_name, is_number, validated_loss,
)
from traindoctor.probe.runtime import SigtermHandler, Terminated, distributed_context
from traindoctor.probe.statistics import DEFAULT_EXACT_MAX_BYTES, DEFAULT_SAMPLE_SIZE, UpdateTracker, norm32
from traindoctor.probe.zeroing import EVENT as GRADS_NOT_ZEROED_EVENT, STATISTIC as ZERO_GRAD_CHECK, ZeroGradCheck
from traindoctor.store.errors import StoreError
from traindoctor.store.format import DEFAULT_STORE, TASK_KINDS, lr_layer
from traindoctor.store.segments import RunWriter

DEFAULT_LAYER_EVERY = 50
DEFAULT_FLUSH_EVERY_S = 2.0
# Rows of the device step buffer: 3 float32 per step, so 1 KiB per 256 steps.
DEFAULT_FLUSH_EVERY_STEPS = 256
# The largest share of the training thread's wall time the live checks may take.
DEFAULT_LIVE_BUDGET = 0.02

# Columns of the per-step device buffer.
_LOSS, _GRAD_NORM, _AMP_SCALE = 0, 1, 2
# Rows of the per-layer device buffer (one [3, P] block per cadence step).
_LAYER_GRAD, _LAYER_WEIGHT, _LAYER_UPDATE = 0, 1, 2
# How many parameter names a warning lists before "and N more".
_LISTED_NAMES = 5
# Names of frozen parameters run.json keeps (env.model.frozen): a frozen 7B backbone
# holds ~300 tensors; run.json is rewritten at every heartbeat, so it stays small.
MAX_FROZEN_NAMES = 1024
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


class _InertHooks:
    """What a pickled model's probe hooks become (``torch.save(model)`` after ``watch()``): hooks that do nothing."""

    def __call__(self, *args: Any) -> None:
        return None

    def _note_inputs(self, *args: Any) -> None:
        return None

    def _note_output(self, *args: Any) -> None:
        return None


class _SharedHook:
    """A hook callable that a deep copy of the model shares rather than copies (an EMA ``copy.deepcopy(model)``
    after ``watch()`` would otherwise try to copy the probe, locks and all)."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __deepcopy__(self, memo: dict) -> "_SharedHook":
        return self

    def __reduce__(self) -> tuple:
        return (_InertHooks, ())


# Statistic name of DiscardedOutputs in the probe's guard: a failure there turns off only it.
DISCARDED_OUTPUTS = "discarded_outputs"
# Probe steps DiscardedOutputs waits for a first optimizer step that runs (a GradScaler skips the first
# steps of an fp16 run while it lowers its scale) before it gives up and removes its hooks.
DISCARDED_WAIT_STEPS = 10
# Autograd nodes DiscardedOutputs visits from a module's output to find that module's own parameters
# (a Linear's are 1-2 nodes away; the walk stops at this many nodes).
_GRAPH_WALK_NODES = 64
# Nesting DiscardedOutputs looks into for a module's output tensors (tuples, lists, mappings, dataclasses).
_OUTPUT_DEPTH = 3


def _output_tensors(value: Any, depth: int = _OUTPUT_DEPTH) -> list[torch.Tensor]:
    """The tensors in a module's output: itself, or inside tuples, lists, mappings and dataclasses (to ``depth``)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if depth <= 0:
        return []
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, (tuple, list)):
        items = list(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, field.name, None) for field in dataclasses.fields(value)]
    else:
        return []
    return [tensor for item in items for tensor in _output_tensors(item, depth - 1)]


def _storage_pointers(tensors: Sequence[torch.Tensor]) -> set[int]:
    """The data pointers of the strided tensors among ``tensors`` (a sparse adjacency matrix has no storage)."""
    return {tensor.data_ptr() for tensor in tensors if tensor.layout == torch.strided and not tensor.is_nested}


def _reached_parameters(outputs: Sequence[torch.Tensor]) -> set[int]:
    """ids of the parameters found within _GRAPH_WALK_NODES autograd nodes of ``outputs`` (their AccumulateGrad nodes)."""
    found: set[int] = set()
    queue = [tensor.grad_fn for tensor in outputs if tensor.grad_fn is not None]
    seen: set[int] = set()
    while queue and len(seen) < _GRAPH_WALK_NODES:
        node = queue.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found.add(id(variable))
            continue
        queue.extend(next_node for next_node, _ in getattr(node, "next_functions", ()))
    return found


class DiscardedOutputs:
    """Parameters whose module's output forward() computes but nothing uses (run.json ``env.model.discarded_outputs``).

    From ``watch()`` to the first optimizer step, a forward hook on every
    module notes the modules whose output was computed from their own
    parameters (their AccumulateGrad nodes a few autograd nodes away:
    host-side graph metadata, no kernel, no host-device sync) and the
    storage of each module's output tensors, and a forward pre-hook notes
    the storage of every tensor a module takes in. :meth:`names`, called
    once the first step's backward passes are done (before
    ``optimizer.step()``), names the parameters of every outermost module
    whose trainable parameters all still have no gradient (``.grad is
    None``) although it computed its output from them, when no module
    took that output in: a dead end of the graph (N-BEATS's last backcast,
    a pooler a token-classification head ignores). Not named, so still
    warned about by the dead_layers rule: a module forward() never calls,
    one run under ``torch.no_grad()``, a parameter its module does not use
    (a forgotten position embedding or layer-scale gain), and an output
    another module takes in after a ``.detach()`` (a CNN's features fed
    detached to its classifier). Outputs are matched to inputs by storage
    pointer within one forward pass, so a freed output whose memory the
    allocator gives to a later module's input reads as taken in: the check
    errs toward the warning.

    Args:
        model: the model (DDP / compiled wrappers are unwrapped).
        on_error: called with an exception raised in a hook (never raised into forward()).
    """

    def __init__(self, model: torch.nn.Module, on_error: Callable[[BaseException], None] | None = None):
        self._model = unwrapped(model)
        self._on_error = on_error
        self._broken = False
        self._from_own: set[int] = set()  # modules whose output was computed from their own parameters
        # Storage pointers keyed by forward pass (memory freed after one micro-batch is reused by the next),
        # each with the hook call that saw it: an output counts as taken in only by a later module input
        # (a module's input freed once read can hand its memory to a later output).
        self._pass = 0
        self._calls = 0
        self._outputs: dict[int, dict[tuple[int, int], int]] = {}  # module id -> its outputs' storage -> call
        self._taken_in: dict[tuple[int, int], int] = {}  # storage of tensors some module took in -> last call
        self._hooks: list[Any] = []
        for module in self._model.modules():
            if isinstance(module, torch.jit.ScriptModule):
                continue  # hooks are not supported on ScriptModules: they stay unjudged (never named)
            try:
                self._hooks.append(module.register_forward_pre_hook(self._note_inputs))
                self._hooks.append(module.register_forward_hook(self._note_output))
            except Exception:  # a module type that refuses hooks: never named
                continue

    def __deepcopy__(self, memo: dict) -> "DiscardedOutputs":
        return self  # a model copied with its hooks (an EMA copy) shares them; its modules are not named

    def __reduce__(self) -> tuple:
        return (_InertHooks, ())  # a pickled model (torch.save(model)) keeps hooks that do nothing

    def _note_inputs(self, module: torch.nn.Module, args: Any) -> None:
        if self._broken:
            return
        try:
            if module is self._model:
                self._pass += 1
            self._calls += 1
            for pointer in _storage_pointers(_output_tensors(args)):
                self._taken_in[(self._pass, pointer)] = self._calls
        except Exception as error:  # in the user's forward: never raised there
            self._failed(error)

    def _note_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._broken:
            return
        try:
            tensors = [tensor for tensor in _output_tensors(output) if tensor.requires_grad]
            if not tensors:
                return
            self._calls += 1
            produced = self._outputs.setdefault(id(module), {})
            for pointer in _storage_pointers(tensors):
                produced[(self._pass, pointer)] = self._calls
            own = [id(param) for param in module.parameters(recurse=False) if param.requires_grad]
            if own and id(module) not in self._from_own and set(own) <= _reached_parameters(tensors):
                self._from_own.add(id(module))
        except Exception as error:
            self._failed(error)

    def _failed(self, error: BaseException) -> None:
        self._broken = True  # names() gives nothing; the hooks go at the probe's next step
        if self._on_error is not None:
            self._on_error(error)

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def names(self, params: Sequence[torch.Tensor]) -> list[str]:
        """Those of ``params`` (the optimizer's) in a dead-end module (see the class), as ``named_parameters()`` names.

        Returns them in model order, at most MAX_FROZEN_NAMES; removes the hooks.
        """
        self.remove()
        if self._broken:
            return []
        tracked = {id(param) for param in params}
        names = {id(param): escaped_name(name) for name, param in self._model.named_parameters()}
        trainable = {id(module): [param for param in module.parameters() if param.requires_grad and id(param) in tracked]
                     for module in self._model.modules()}

        def dead(module: torch.nn.Module) -> bool:
            params_here = trainable[id(module)]
            if not params_here or any(param.grad is not None for param in params_here):
                return False
            # Computed from its parameters: itself (its own ones), or every descendant that holds some.
            holders = [sub for sub in module.modules() if any(True for _ in sub.parameters(recurse=False))
                       and any(p.requires_grad and id(p) in tracked for p in sub.parameters(recurse=False))]
            return bool(holders) and all(id(sub) in self._from_own for sub in holders)

        found: list[str] = []
        covered: set[int] = set()
        for name, module in self._model.named_modules():
            if id(module) in covered or not dead(module):
                continue
            covered.update(id(sub) for sub in module.modules())
            produced = self._outputs.get(id(module), {})
            if any(self._taken_in.get(key, 0) > call for key, call in produced.items()):
                continue  # another module took its output in (after a .detach()): cut off, not a dead end
            found += [names[id(param)] for param in trainable[id(module)] if id(param) in names]
        self._from_own, self._outputs, self._taken_in = set(), {}, {}
        return list(dict.fromkeys(found))[:MAX_FROZEN_NAMES]


def parameter_layout(model: torch.nn.Module) -> dict[str, Any]:
    """The model's parameters in registration order with their shapes, and the tied ones (run.json ``env.model``).

    Returns ``{"shapes": [[name, [d0, d1, ...]], ...], "tied": [name, ...]}``: ``shapes`` in
    ``named_parameters()`` order (model order for models that register layers as forward runs them; a list,
    as run.json's keys are written sorted; at most MAX_FROZEN_NAMES entries), ``tied`` the parameters
    reachable under more than one name (a language model's input embedding shared with its output layer),
    under the name ``named_parameters()`` keeps. The gradient rules use them to
    pick a model's first and last weight matrices; names sorted alphabetically put ``decoder`` before
    ``encoder`` and a pooling query vector beside a weight matrix.
    """
    model = unwrapped(model)
    shapes = [[escaped_name(name), [int(size) for size in param.shape]]
              for name, param in itertools.islice(model.named_parameters(), MAX_FROZEN_NAMES)]
    seen: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    tied = [escaped_name(name) for name, param in model.named_parameters() if seen.get(id(param), 0) > 1]
    return {"shapes": shapes, "tied": tied[:MAX_FROZEN_NAMES]}


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module a wrapper holds, for parameter names: ``torch.compile``'s
    OptimizedModule (``_orig_mod.``) and (Distributed)DataParallel
    (``module.``) prefix every name, so a compiled or wrapped run's layers
    would not match the same model's eager run. The parameters are the same
    tensors either way."""
    inner = model
    for _ in range(8):  # wrappers nest: DDP around a compiled model
        held = getattr(inner, "_orig_mod", None)
        if isinstance(held, torch.nn.Module):
            inner = held
        elif isinstance(inner, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            inner = inner.module
        else:
            break
    return inner


def default_store(store: Any) -> Any:
    """``store`` as given, or for None ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``.

    The CLI reads the same default, so a run recorded with the variable set is
    where ``traindoctor runs`` looks (the multi-node set-up sets only it).
    """
    if store is not None:
        return store
    return os.environ.get("TRAINDOCTOR_STORE") or DEFAULT_STORE


def _warn_from_flush(message: str) -> None:
    """A warning about the user's inputs found while a flush writes them. A warnings filter that turns it into an
    exception (``"error"``, pytest's ``-W error``) must not abort the flush: that would turn recording off and
    lose the rest of the run. Then the message goes to stderr instead."""
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    except Warning:
        print(message, file=sys.stderr)


class ProbeError(Exception):
    """A misuse of the probe API (raised at the call, with a one-line message)."""


class TrainingStopped(ProbeError):
    """Raised by ``probe.step()`` when a live finding met ``stop_on`` and ``raise_on_stop=True``.

    Attributes:
        finding: the live finding that stopped training
            (a :class:`~traindoctor.diagnosis.finding.Finding`).
    """

    def __init__(self, message: str, finding: Any) -> None:
        super().__init__(message)
        self.finding = finding


@dataclass
class _Transfer:
    """One flush: host copies (maybe still in flight) and the host-side columns that go with them."""

    event: Any  # torch.cuda.Event or None when the copies are already complete
    # The layer and lr-group names the buffered values were measured under.
    layer_names: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()
    values: torch.Tensor | None = None
    host: dict[str, np.ndarray] = field(default_factory=dict)
    layer_values: torch.Tensor | None = None
    layer_host: dict[str, np.ndarray] = field(default_factory=dict)
    logged: torch.Tensor | None = None
    logged_rows: list[tuple] = field(default_factory=list)
    evaluations: list[tuple[EvaluationResult, torch.Tensor | None, torch.Tensor | None]] = field(default_factory=list)
    # The zero_grad check's per-step flags and, when a step was measured, its [rows, 2] norms.
    zeroing_flags: np.ndarray | None = None
    zeroing_values: torch.Tensor | None = None

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


def _task_kind(task: str | None, num_classes: int | None, vocab_size: int | None) -> str:
    """run.json's task.kind from ``Probe(task=..., num_classes=..., vocab_size=...)``.

    Raises:
        ValueError: an unknown kind, a bad vocab_size, or arguments of another kind.
    """
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral)
                                   or vocab_size < 2):
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    kind = task if task is not None else (
        "classification" if num_classes else "language_modelling" if vocab_size else "unknown")
    if kind not in TASK_KINDS:
        raise ValueError(f"task must be one of {TASK_KINDS}, got {task!r}")
    if num_classes is not None and kind != "classification":
        raise ValueError(f"num_classes is for classification, not task={kind!r} (a language model's: vocab_size)")
    if vocab_size is not None and kind != "language_modelling":
        raise ValueError(f"vocab_size is for task='language_modelling', not {kind!r}")
    return kind


class Probe:
    """Records a training run into a traindoctor store.

    Args:
        run: the run's human name (may repeat across runs).
        store: the store folder or URL; None (the default) is ``$TRAINDOCTOR_STORE``, else
            ``./traindoctor_runs`` (a name no other tool uses), as for the CLI's ``--store``.
        config: hyperparameters to keep with the run, copied by
            ``guard.checked_config`` (numbers, strings and nested mappings
            kept; other objects as their text; a sequence of more than 1,000
            items as its text; more than 50,000 values raise ``ValueError``).
        num_classes: classes of a classification task (enables confusion
            counts of the right size and the initial-loss check).
        class_names: names of the classes, ``num_classes`` of them.
        task: what the loss measures (``TASK_KINDS``: ``"classification"``,
            ``"language_modelling"``, ``"regression"``, ``"unknown"``); the
            rules that judge a loss level need it. Default: classification
            when ``num_classes`` is given, language modelling when
            ``vocab_size`` is, else unknown.
        vocab_size: the vocabulary of a language model (its initial loss is
            at most about ln V).
        project: optional project name.
        layer_every: per-layer statistics every this many steps (and at step 1).
        flush_every_s: hand buffered values to the store at least this often.
        flush_every_steps: ... or every this many steps.
        strict: raise when a statistic fails instead of turning it off (tests).
        run_id: an existing run's id to resume it (a new attempt), or a shared
            id; under torch.distributed rank 0's id is broadcast to all ranks.
        rank, world_size: default from torch.distributed when initialised.
        expected_initial_loss: the loss a fresh model should start at, if not ln(C).
        update_ratio_exact_max_bytes: copy weights whole for exact update
            ratios up to this model size; sample elements above it.
        update_ratio_sample_size: elements sampled per tensor above it.
        handle_sigterm: record a crash on SIGTERM (main thread only).
        initial_step: optimizer steps already taken (when resuming from a
            checkpoint with ``run_id``): the next ``probe.step()`` is this + 1.
        compact_on_close: merge a finished run's segments into one sorted
            file at close (rank 0; the compactor is imported only then). On an
            object store only for a single-rank run: compacting there first
            downloads every rank's segments, which would hold a large job's
            rank 0 at exit (``traindoctor compact --store URL`` does it later).
        live: run the live rules at each flush (``traindoctor.diagnosis.live``:
            divergence, loss spikes, exploding and vanishing gradients, AMP
            skipped steps, an lr rebound, train/eval mode mistakes, update
            ratios out of band) on a bounded window of recent values already
            on the host; each new warning or critical finding is recorded as
            a ``live_finding`` event. Loads the rules (numpy, no pandas) at
            construction; ``False`` records only.
        live_budget: the largest share of the training thread's wall time
            the live checks may take (default 0.02). A flush that comes
            sooner after the last check than that check's cost allows (a
            16 ms check: 0.8 s) leaves its values to the next check, made at
            the first flush that the budget allows, and at close; a flush
            holding a non-finite loss or gradient norm is checked at once.
            None checks at every flush (a loop of millisecond steps then
            spends a large share of its time in them).
        on_finding: called with each new live finding (a ``Finding``), on the
            training thread at the flush that raised it: keep it quick. An
            error in it is warned about once and never reaches training.
        stop_on: ``"critical"`` or ``"warning"``: a live finding at or above
            it makes ``probe.should_stop`` true (and is recorded as a
            ``stop_requested`` event); None never asks to stop.
        raise_on_stop: with ``stop_on``, ``probe.step()`` raises
            :class:`TrainingStopped` naming the finding once ``should_stop``
            is true; leaving the ``with`` block that way records the run as
            ``finished`` with a ``training_stopped`` event.

    Example:
        >>> with Probe(run="mlp", store=tmp, num_classes=10) as probe:  # doctest: +SKIP
        ...     probe.watch(model, optimizer)
        ...     for x, y in loader:
        ...         loss = criterion(model(x), y)
        ...         loss.backward(); optimizer.step(); optimizer.zero_grad()
        ...         probe.step(loss=loss)
    """

    def __init__(
        self,
        run: str | None = None,
        store: Any = None,
        *,
        config: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        task: str | None = None,
        vocab_size: int | None = None,
        project: str | None = None,
        layer_every: int = DEFAULT_LAYER_EVERY,
        flush_every_s: float = DEFAULT_FLUSH_EVERY_S,
        flush_every_steps: int = DEFAULT_FLUSH_EVERY_STEPS,
        strict: bool = False,
        run_id: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        expected_initial_loss: float | None = None,
        update_ratio_exact_max_bytes: int = DEFAULT_EXACT_MAX_BYTES,
        update_ratio_sample_size: int = DEFAULT_SAMPLE_SIZE,
        handle_sigterm: bool = True,
        initial_step: int = 0,
        compact_on_close: bool = True,
        live: bool = True,
        on_finding: Callable[[Any], Any] | None = None,
        stop_on: str | None = None,
        raise_on_stop: bool = False,
        live_budget: float | None = DEFAULT_LIVE_BUDGET,
    ) -> None:
        if run is not None:
            check_name(run, "run")
        _check_live_options(live, on_finding, stop_on, raise_on_stop)
        if live_budget is not None and not (isinstance(live_budget, (int, float)) and 0 < live_budget <= 1):
            raise ValueError(f"live_budget must be a fraction in (0, 1] or None, got {live_budget!r}")
        if project is not None:
            check_name(project, "project")
        # Checked and converted here, before the run folder exists: an
        # unserialisable config must not leave a half-made run behind.
        config = {} if config is None else checked_config(config)
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
                raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
            num_classes = int(num_classes)
        if class_names is not None:
            class_names = [check_name(str(name), f"class_names[{index}]") for index, name in enumerate(class_names)]
            if num_classes is None:
                num_classes = len(class_names)
            if len(class_names) != num_classes:
                raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        kind = _task_kind(task, num_classes, vocab_size)
        self.layer_every = check_positive_int(layer_every, "layer_every")
        self.flush_every_steps = check_positive_int(flush_every_steps, "flush_every_steps")
        if not is_number(flush_every_s) or not flush_every_s > 0:
            raise ValueError(f"flush_every_s must be a positive number, got {flush_every_s!r}")
        self.flush_every_s = float(flush_every_s)
        if expected_initial_loss is not None and not is_number(expected_initial_loss):
            raise ValueError(f"expected_initial_loss must be a number, got {expected_initial_loss!r}")
        if isinstance(initial_step, bool) or not isinstance(initial_step, numbers.Integral) or initial_step < 0:
            raise ValueError(f"initial_step must be a non-negative integer, got {initial_step!r}")
        self.strict = bool(strict)
        # Public so that the integrations' callbacks run under the same guard.
        self.guard = StatisticGuard(strict=self.strict)
        self.compact_on_close = bool(compact_on_close)
        self.num_classes = num_classes
        self._exact_max_bytes = int(update_ratio_exact_max_bytes)
        self._sample_size = check_positive_int(update_ratio_sample_size, "update_ratio_sample_size")

        resumed_id = run_id  # the id the caller gave, before torch.distributed may broadcast one
        auto_rank, auto_world, run_id = distributed_context(run_id)
        self.rank = auto_rank if rank is None else int(rank)
        self.world_size = auto_world if world_size is None else int(world_size)
        task_meta: dict[str, Any] = {"kind": kind, "num_classes": num_classes, "class_names": class_names}
        if vocab_size is not None:
            task_meta["vocab_size"] = int(vocab_size)
        if expected_initial_loss is not None:
            task_meta["expected_initial_loss"] = float(expected_initial_loss)
        elif num_classes:
            task_meta["expected_initial_loss"] = math.log(num_classes)
        store = default_store(store)
        try:
            self.writer = RunWriter(
                store, name=run, run_id=run_id, rank=self.rank, world_size=self.world_size, project=project,
                config=config, task=task_meta,
                env={"torch": torch.__version__},
                probe_settings={
                    "layer_every": self.layer_every, "flush_every_s": self.flush_every_s,
                    "flush_every_steps": self.flush_every_steps,
                    "update_ratio_exact_max_bytes": self._exact_max_bytes,
                    "update_ratio_sample_size": self._sample_size,
                },
                source={"kind": "probe"},
                flush_every_s=self.flush_every_s,
            )
        except OSError as error:
            # One line naming the store the user gave, not the run folder deep inside it.
            raise type(error)(error.errno, f"Probe: cannot write into store {store}: {error.strerror or error}",
                              error.filename) from None
        self.run_id = self.writer.run_id
        self.step_count = int(initial_step)
        if resumed_id is not None and self.step_count > 0 and self.writer.attempt == 0 and self.rank == 0:
            # A mistyped id to resume made a second run, its steps starting at initial_step + 1.
            warnings.warn(f"traindoctor probe: run_id {resumed_id!r} is not in store {store}: a new run started "
                          f"under it at step {self.step_count + 1}, but initial_step={self.step_count} says a run "
                          f"is being resumed (check the id: traindoctor runs)", RuntimeWarning, stacklevel=2)
        self._first_step = self.step_count + 1
        self.epoch: float | None = None
        self.closed = False
        self._watched = False
        self._zero_check: ZeroGradCheck | None = None
        # The guard's own set, read directly by the step path (a call per check costs more).
        self._disabled = self.guard.disabled
        self._warned: set[str] = set()  # one-time usage warnings (failing statistics warn through the guard)
        self._handles: list[Any] = []
        self._pending: list[_Transfer] = []
        self._logged: list[tuple] = []
        self._logged_tensors: list[torch.Tensor] = []
        self._evaluations: list[EvaluationResult] = []
        self._warned_target_range = False  # targets >= the class count: warned once, when their count lands
        self._warned_multi_label = False  # multi-hot targets: warned once, when their count lands
        self._warned_narrow_logits = False  # logits with fewer classes than num_classes: warned once
        # The parameters being tracked (set by watch()), in recording order, and
        # how the step path finds them.
        self._params: list[torch.Tensor] = []
        self._param_ids: list[int] = []
        self._names: tuple[str, ...] = ()
        self._group_names: tuple[str, ...] = ()
        # id(param) -> (param, hook handle, [slot index or None, slot view, direct]); the
        # hook reads the list, so re-indexing after a change needs no new hook. The
        # param is held so that its id cannot be reused while the entry lives.
        self._hooked: dict[int, tuple[torch.Tensor, Any, list]] = {}
        self._model_meta: dict[str, Any] | None = None  # run.json env.model, once watch() has written it
        self._discarded: DiscardedOutputs | None = None  # watch() to the first optimizer step
        self._frozen: list[torch.Tensor] = []  # tracked, but no hook yet: requires_grad was False
        self._fresh: list[torch.Tensor] = []  # hooked since the last optimizer step, perhaps after their backward
        # Gradient norms taken together at the end of each backward pass (one _foreach_norm, a
        # handful of kernels) rather than one kernel per hooked tensor: (slot index, param) pairs
        # whose gradient was accumulated in the running backward, and a weak reference to the
        # engine callback queued to measure them: alive while the engine holds it, not yet run
        # (see _queue_norms). Single-process runs only (see _make_grad_hook).
        self._norms_due: list[tuple[int, torch.Tensor]] = []
        self._norms_callback: weakref.ref | None = None
        self._group_signature: tuple[tuple[int, int], ...] = ()
        self._summary_stale = False
        self._terminated = False
        self._entered = False
        self._last_flush = time.monotonic()
        self._row = 0
        self._layer_row = 0
        self._in_training_mode = True
        self._publish = threading.Event()
        self._publisher = threading.Thread(target=self._publish_loop, name=f"traindoctor-probe-{self.run_id}", daemon=True)
        self._publisher.start()
        self._sigterm = SigtermHandler(self._on_sigterm)
        if handle_sigterm:
            self._sigterm.install()
        atexit.register(self._close_at_exit)  # unregistered by close()
        self._on_finding = on_finding
        self._stop_on = stop_on
        self._raise_on_stop = bool(raise_on_stop)
        self._stop_finding: Any = None  # the first live finding at or above stop_on
        self._stop_recorded = False
        self._stop_raised = False
        self.live_findings: list[Any] = []  # every live finding raised, in order (bounded by the live checks)
        self._live = None
        self._live_budget = None if live_budget is None else float(live_budget)
        self._live_due = False  # values written since the last live check
        self._live_urgent = False  # a non-finite loss or gradient norm among them: checked at once
        self._live_cost_s = 0.0  # wall seconds the last live check took
        self._live_done_at = -math.inf  # time.perf_counter() when it ended
        if live:
            # The rules (numpy) load here, not at import: `from traindoctor import Probe` stays light.
            from traindoctor.diagnosis.live import LiveDiagnosis

            self._live = LiveDiagnosis(run_id=self.run_id, name=run or self.run_id, task=task_meta)

    def _publish_loop(self) -> None:
        while True:
            self._publish.wait()
            self._publish.clear()
            if self.closed:
                return
            try:
                self.writer.flush()
            except Exception as error:  # the writer reports it; training goes on
                try:
                    self.writer.record_error(error)
                except Exception:  # a thread that dies would publish nothing more until close
                    pass

    # ------------------------------------------------------------------ watch

    def watch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None) -> "Probe":
        """Attach hooks to ``model``'s parameters and ``optimizer``; lint the set-up.

        Args:
            model: the module being trained (names come from ``named_parameters()``).
            optimizer: a ``torch.optim.Optimizer`` (wrappers with ``.optimizer`` are unwrapped).
            scaler: the ``torch.amp.GradScaler`` in use, if any.
        """
        if self.closed:
            raise ProbeError("probe.watch(): this probe is closed")
        if self._watched:
            raise ProbeError("probe.watch() was already called; one probe watches one model and optimizer")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"probe.watch(): model must be a torch.nn.Module, got {type(model).__name__}")
        inner = optimizer
        # Wrappers (accelerate's AcceleratedOptimizer, Lightning's LightningOptimizer)
        # call the wrapped optimizer's step, whose hooks are the ones that fire.
        for attribute in ("optimizer", "_optimizer", "optimizer", "_optimizer"):
            wrapped = getattr(inner, attribute, None)
            if isinstance(wrapped, torch.optim.Optimizer):
                inner = wrapped
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError(f"probe.watch(): optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if scaler is not None and not (hasattr(scaler, "is_enabled") and hasattr(scaler, "scale")):
            raise TypeError(f"probe.watch(): scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        optimizer = inner
        self._model = model
        self._optimizer = optimizer
        self._scaler = scaler if scaler is not None and scaler.is_enabled() else None

        params = self._optimizer_params()
        if not params:
            raise ProbeError("probe.watch(): the optimizer has no parameters")
        self._device = params[0].device
        self._allocate_step_buffers(device=self._device)
        self._use_params(params, in_backward=False, initial=True)
        # Gradients never zeroed between optimizer steps (probe.zeroing); None when it could not be set up.
        self._zero_check = self.guard.guarded(ZERO_GRAD_CHECK, ZeroGradCheck, self._params, self._names,
                                              self._device, self.flush_every_steps, self.guard)

        self._handles.append(optimizer.register_step_pre_hook(self._before_optimizer_step))
        self._handles.append(optimizer.register_step_post_hook(self._after_optimizer_step))
        self._amp_dtype: torch.dtype | None = None
        # On every submodule, not just the root: Lightning's training_step calls
        # submodules without model.forward. Removed at the first step.
        detect = _SharedHook(self._detect_autocast)
        self._autocast_hooks = [m.register_forward_pre_hook(detect) for m in model.modules()
                                if not isinstance(m, torch.jit.ScriptModule)]
        # Until the first optimizer step: parameters whose output forward() computes but the loss never uses.
        self._discarded = self.guard.guarded(DISCARDED_OUTPUTS, DiscardedOutputs, model,
                                             lambda error: self.guard.fail(DISCARDED_OUTPUTS, error))
        self._watched = True

        self.guard.guarded("lint", self._record_setup, model, optimizer)
        return self

    # ------------------------------------------------------- parameter tracking

    def _optimizer_params(self) -> list[torch.Tensor]:
        """The optimizer's parameters now, each once, in param-group order."""
        params: list[torch.Tensor] = []
        seen: set[int] = set()
        for group in self._optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        return params

    def _parameter_names(self, params: Sequence[torch.Tensor]) -> tuple[str, ...]:
        """``named_parameters()`` names (escaped if they hold control characters), else ``group<g>.param<i>``."""
        names = {id(param): escaped_name(name) for name, param in unwrapped(self._model).named_parameters()}
        positions = {}
        for group_index, group in enumerate(self._optimizer.param_groups):
            for param_index, param in enumerate(group["params"]):
                positions.setdefault(id(param), f"group{group_index}.param{param_index}")
        return tuple(names.get(id(param)) or positions[id(param)] for param in params)

    def _signature(self) -> tuple[tuple[int, int], ...]:
        return tuple((id(group["params"]), len(group["params"])) for group in self._optimizer.param_groups)

    def _params_changed(self) -> bool:
        """True when the optimizer's parameter set may have changed since it was last read.

        Called twice a step (the step's first gradient hook, the optimizer
        step pre-hook) and reads no tensor value: the number of groups, each
        group's list object and length (about 1 us), and, only when the
        optimizer holds parameters without a hook, whether one of them now
        requires a gradient (a flag read, about 0.2 us per such tensor). A
        list edited in place at the same length is found by
        ``_audit_params`` at the next flush instead.
        """
        groups = self._optimizer.param_groups
        signature = self._group_signature
        if len(groups) != len(signature):
            return True
        for group, (list_id, length) in zip(groups, signature):
            params = group["params"]
            if id(params) != list_id or len(params) != length:
                return True
        return bool(self._frozen) and any(map(_REQUIRES_GRAD, self._frozen))

    def _track_params(self, *, in_backward: bool) -> None:
        """Follow a change of the optimizer's parameters (guarded: a failure turns the gradient statistics off)."""
        if "param_tracking" in self._disabled:
            return
        try:
            if self._params_changed():
                self._use_params(self._optimizer_params(), in_backward=in_backward)
        except Exception as error:
            # Without tracking, the norms could silently leave parameters out.
            self.guard.fail("param_tracking", error, also=("grad_norm", "layer_stats"))

    def _use_params(self, params: list[torch.Tensor], *, in_backward: bool, initial: bool = False) -> None:
        """Make ``params`` (the optimizer's, in order) the tracked set; hook those that need it.

        Values buffered so far go to the host first, with the names they were
        measured under; gradient norms this step has already measured move to
        their parameters' new slots. Runs at ``watch()`` (``initial``) and when
        the set changes (rare: it allocates and may sync, unlike a step).
        """
        param_ids = [id(param) for param in params]
        groups = len(self._optimizer.param_groups)
        if param_ids != self._param_ids or groups != len(self._group_names):
            if not initial and self._norms_due:  # into the old slots, carried below
                self._measure_due_norms()
            measured = None if initial else (self._param_ids, self._grad_slots, self._fired)
            if not initial:
                self._set_aside()
                self._summary_stale = True
            self._params, self._param_ids = params, param_ids
            self._names = self._parameter_names(params)
            if groups != len(self._group_names):
                self._group_names = tuple(lr_layer(index) for index in range(groups))
                self._allocate_lr_buffers()
            self._allocate_layer_buffers(len(params))
            if measured is not None and any(measured[2]):
                self._carry_slots(*measured)
            # A layer record half made by an earlier optimizer step of this step
            # was in the old buffer: it is dropped, not written under new names.
            self._updated = False
            self._tracker = UpdateTracker(params, exact_max_bytes=self._exact_max_bytes, sample_size=self._sample_size)
            for key, (_, handle, ref) in list(self._hooked.items()):
                index = self._slot_index.get(key)
                if index is not None:
                    ref[0], ref[1] = index, self._slot_views[index]
                    continue
                ref[0] = None  # no longer in the optimizer: its hook does nothing
                if not in_backward:  # (during a backward the hook may be running: removed at a later change)
                    handle.remove()
                    del self._hooked[key]
        self._group_signature = self._signature()
        self._hook_params(initial=initial)

    def _carry_slots(self, old_ids: list[int], old_slots: torch.Tensor, old_fired: list[bool]) -> None:
        """Move this step's gradient norms measured before a change to their parameters' new slots."""
        count = len(old_ids)
        if self._param_ids[:count] == old_ids:  # parameters were only added (add_param_group): one copy
            self._grad_slots[:count].copy_(old_slots)
            self._fired[:count] = old_fired
            return
        old_views = old_slots.unbind(0)
        previous = {key: index for index, key in enumerate(old_ids)}
        for index, key in enumerate(self._param_ids):
            old = previous.get(key)
            if old is not None and old_fired[old]:
                self._slot_views[index].copy_(old_views[old])
                self._fired[index] = True

    def _hook_params(self, *, initial: bool) -> None:
        """Register a gradient hook on each tracked parameter that requires a gradient and has none yet."""
        frozen = []
        for index, param in enumerate(self._params):
            if id(param) in self._hooked:
                continue
            if not param.requires_grad:
                frozen.append(param)
                continue
            direct = param.device == self._device and param.dtype != torch.float64
            ref = [index, self._slot_views[index], direct]
            handle = param.register_post_accumulate_grad_hook(self._make_grad_hook(ref))
            self._hooked[id(param)] = (param, handle, ref)
            if not initial:
                self._fresh.append(param)
        self._frozen = frozen

    @torch.no_grad()
    def _measure_fresh(self, unscaled: bool = True) -> None:
        """Read the gradients of parameters hooked after their backward had run.

        At the end of that backward (``unscaled=False``: the gradients are as
        backward left them, scaled like the other slots), or in the step
        pre-hook when the change was first seen there (after any clipping;
        under a scaler, ``scaler.step()`` has unscaled them).
        """
        fresh, self._fresh = self._fresh, []
        for param in fresh:
            entry = self._hooked.get(id(param))
            index = None if entry is None else entry[2][0]
            if index is None or self._fired[index] or param.grad is None:
                continue
            if not self._scale_captured:
                self._capture_scale()
            slot = self._slot_views[index]
            slot.copy_(norm32(param.grad), non_blocking=True)
            if unscaled and self._scaler is not None:
                # scaler.step() unscaled the gradients before this hook; the slots hold scaled norms.
                slot.mul_(self._scale_slot)
            self._fired[index] = True
            self._any_fired = True

    def _audit_params(self) -> None:
        """At a flush: the full comparison ``_params_changed`` leaves out, and gradients outside the optimizer.

        O(parameters), once per flush. A group's list edited in place is
        tracked from now on, with a warning naming what earlier steps left
        out; a model parameter with a gradient that is not in the optimizer
        cannot be tracked (nothing updates it) and is named in a warning once.
        """
        params = self._optimizer_params()
        if [id(param) for param in params] != self._param_ids:
            known = set(self._param_ids)
            self._use_params(params, in_backward=False)
            added = [name for param, name in zip(self._params, self._names) if id(param) not in known]
            if added:
                self._warn_once("params_replaced_in_place",
                                f"traindoctor probe: {_listed(added)} entered the optimizer by an in-place change of a "
                                f"param group's list; they are counted in grad_norm from step {self.step_count + 1}, "
                                "earlier steps leave them out (use optimizer.add_param_group to have them counted "
                                "at once)")
        if "params_outside_optimizer" not in self._warned:
            tracked = set(self._param_ids)
            outside = [escaped_name(name) for name, param in unwrapped(self._model).named_parameters()
                       if param.grad is not None and id(param) not in tracked]
            if outside:
                self._warn_once("params_outside_optimizer",
                                f"traindoctor probe: {_listed(outside)} of the model get gradients but are not in the "
                                "optimizer: grad_norm and the per-layer statistics leave them out (add them with "
                                "optimizer.add_param_group if they should train)")
        if self._summary_stale:
            self._summary_stale = False
            self.guard.guarded("lint", self._record_optimizer_summary)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=5)  # the caller of probe.step()

    # ---------------------------------------------------------------- buffers

    def _allocate_step_buffers(self, device: torch.device) -> None:
        """The per-step device buffer and its host-side companions (sized by flush_every_steps)."""
        capacity = self.flush_every_steps
        self._values = torch.full((capacity, 3), float("nan"), dtype=torch.float32, device=device)
        # 0-d views of every cell, made once: indexing a tensor costs microseconds per call.
        self._cells = [row.unbind(0) for row in self._values.unbind(0)]
        self._host_steps = np.zeros(capacity, dtype=np.int64)
        self._host_epochs = np.full(capacity, np.nan)
        self._host_walls = np.zeros(capacity)
        self._host_lr_recorded = np.zeros(capacity, dtype=bool)
        self._host_loss = np.full(capacity, np.nan)
        self._host_loss_kind = np.zeros(capacity, dtype=np.int8)  # 0 none, 1 device, 2 host number
        self._host_grads = np.zeros(capacity, dtype=bool)
        self._host_amp_recorded = np.zeros(capacity, dtype=bool)
        self._host_skipped = np.zeros(capacity, dtype=bool)
        self._scale_slot = torch.ones((), dtype=torch.float32, device=device)
        self._scale_captured = False
        self._lrs_read = False
        self._any_fired = False
        self._stepped = False
        self._updated = False
        self._cadence = True  # step 1 always records per-layer statistics

    def _allocate_lr_buffers(self) -> None:
        """Host lr columns, one per param group (reallocated, empty, when the groups change)."""
        self._host_lrs = np.full((self.flush_every_steps, len(self._group_names)), np.nan)
        self._step_lrs = np.full(len(self._group_names), np.nan)
        self._lrs_read = False  # read again into the new width

    def _allocate_layer_buffers(self, count: int) -> None:
        """Per-layer device buffer and gradient slots for ``count`` parameters (empty)."""
        device = self._device
        layer_capacity = self.flush_every_steps // self.layer_every + 2
        self._layer_values = torch.full((layer_capacity, 3, count), float("nan"), dtype=torch.float32, device=device)
        self._layer_steps = np.zeros(layer_capacity, dtype=np.int64)
        self._layer_epochs = np.full(layer_capacity, np.nan)
        self._layer_walls = np.zeros(layer_capacity)
        self._layer_fired = np.zeros((layer_capacity, count), dtype=bool)
        self._layer_updated = np.zeros(layer_capacity, dtype=bool)

        # Gradient norms of the latest backward, one slot per parameter; the
        # hooks write into these views with out=, so no allocation per hook.
        self._grad_slots = torch.zeros(count, dtype=torch.float32, device=device)
        self._slot_views = list(self._grad_slots.unbind(0))
        self._slot_index = {key: index for index, key in enumerate(self._param_ids)}
        self._fired = [False] * count

    def _record_setup(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._has_attention = lint.has_attention(model)
        self._model_meta = {
            "type": type(model).__name__,
            "num_params": int(sum(p.numel() for p in model.parameters())),
            "has_attention": self._has_attention,
            "num_layers": sum(1 for m in model.modules() if not list(m.children())),
            # Frozen on purpose (a fine-tuned model's backbone handed to the optimizer with the
            # rest): the dead_layers rule does not warn that these never learn.
            "frozen": [name for param, name in zip(self._params, self._names)
                       if not param.requires_grad][:MAX_FROZEN_NAMES],
            **parameter_layout(model),
        }
        self.writer.update_meta(env={
            "device": str(self._device),
            "optimizer": self._optimizer_summary(),
            "model": self._model_meta,
            "amp": {"dtype": None, "scaler": self._scaler is not None},
        })
        names = {id(param): escaped_name(name) for name, param in unwrapped(model).named_parameters()}
        for finding in lint.check_weight_decay(model, optimizer, names):
            self.writer.add_event("config_lint", finding.detail(), step=0)

    def _optimizer_summary(self) -> dict[str, Any]:
        groups = []
        for group in self._optimizer.param_groups:
            summary = {
                key: (list(group[key]) if isinstance(group.get(key), tuple) else group.get(key))
                for key in ("lr", "initial_lr", "weight_decay", "betas", "eps", "momentum")
                if key in group
            }
            summary = {k: (float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 and v.device.type == "cpu" else v)
                       for k, v in summary.items()}
            summary["num_tensors"] = len(group["params"])
            summary["num_params"] = int(sum(p.numel() for p in group["params"]))
            groups.append(summary)
        return {"type": type(self._optimizer).__name__, "param_groups": groups}

    def _record_optimizer_summary(self) -> None:
        self.writer.update_meta(env={"optimizer": self._optimizer_summary()})

    def _detect_autocast(self, module: torch.nn.Module, args: Any) -> None:
        # In the user's forward: an error here (a device type autocast does not
        # know, such as "meta") must not reach it.
        if "lint" in self._disabled:
            return
        try:
            device_type = self._device.type
            if torch.is_autocast_enabled(device_type):
                self._amp_dtype = torch.get_autocast_dtype(device_type)
        except Exception as error:
            self.guard.fail("lint", error)

    def _remove_autocast_hooks(self) -> None:
        for hook in self._autocast_hooks:
            hook.remove()
        self._autocast_hooks = []

    def _remove_output_hooks(self) -> None:
        if self._discarded is not None:
            self._discarded.remove()
            self._discarded = None

    def _record_discarded_outputs(self) -> None:
        """At the first optimizer step: write ``env.model.discarded_outputs`` (see DiscardedOutputs)."""
        watch, self._discarded = self._discarded, None
        if watch is None:
            return
        discarded = watch.names(self._params)
        if discarded and self._model_meta is not None:
            self._model_meta = {**self._model_meta, "discarded_outputs": discarded}
            self.writer.update_meta(env={"model": self._model_meta})

    def _lint_first_step(self) -> None:
        dtype = self._amp_dtype
        amp = {"dtype": None if dtype is None else str(dtype).replace("torch.", ""), "scaler": self._scaler is not None}
        self.writer.update_meta(env={"amp": amp})
        if self._live is not None:
            self._live.env["amp"] = amp  # the AMP rule's fp16-without-a-scaler check
        findings = lint.check_fp16_without_scaler(dtype, self._scaler is not None)
        findings += lint.check_adam(self._optimizer, has_attention=self._has_attention, amp_dtype=dtype)
        for finding in findings:
            self.writer.add_event("config_lint", finding.detail(), step=0)

    # ------------------------------------------------------------------ hooks

    def _make_grad_hook(self, ref: list) -> Callable[[torch.Tensor], None]:
        """A post-accumulate-grad hook writing the norm into slot ``ref[0]`` (``ref`` is updated on a re-index)."""

        def hook(tensor: torch.Tensor) -> None:
            if "grad_norm" in self._disabled:
                return
            try:
                if not self._scale_captured:  # the step's first backward reaches its first parameter
                    self._capture_scale()
                    self._track_params(in_backward=True)
                index, slot, direct = ref
                if index is None:  # no longer in the optimizer
                    return
                grad = tensor.grad
                if grad is None:  # torch.compile fires it for a parameter whose output the loss never uses
                    return
                if direct and not grad.is_sparse and self.world_size == 1:
                    self._norms_due.append((index, tensor))
                    pending = self._norms_callback
                    if pending is None or pending() is None:
                        self._queue_norms()
                elif direct and not grad.is_sparse:
                    with torch.no_grad():  # backward(create_graph=True): the gradient requires grad
                        torch.linalg.vector_norm(grad, dtype=torch.float32, out=slot)
                else:  # another device, float64 or sparse
                    with torch.no_grad():
                        slot.copy_(norm32(grad), non_blocking=True)
                self._fired[index] = True
                self._any_fired = True
            except Exception as error:
                self.guard.fail("grad_norm", error)

        return hook

    def _queue_norms(self) -> None:
        """Have the autograd engine measure the due gradient norms once this backward pass ends.

        One hook per tensor launching its own norm kernel cost ~6 µs of host
        time per tensor and step (L = 148 for GPT-2 small: ~1 ms a step on an
        H200, 2.5 % of the step). The hooks now only note the tensor; the
        engine's end-of-backward callback (the one DDP and FSDP finish their
        reductions with) takes every noted gradient's norm in one
        ``_foreach_norm``. Under DDP the gradient would already be averaged
        by then, so a multi-rank run keeps one kernel per tensor, taken at
        accumulation (each rank's local norm, before the all-reduce).
        Where no callback can be queued (not inside the engine; under
        compiled autograd, whose dynamo trace of the hooks refuses
        ``queue_callback``), the norms are taken at once, one per hook.

        A hook queues the callback unless one queued earlier is still held
        by the engine, not yet run: the probe keeps only a weak reference to
        it. A backward that raises drops its queued callbacks (the engine
        frees them with the backward), so the next backward queues its own;
        a plain "queued" flag left set by it kept every later backward of
        the step from queueing one, and their norms were read in the
        optimizer pre-hook, after clipping and ``unscale_``. A backward
        nested in a running one (reentrant checkpointing) queues none: the
        outer backward's callback, which runs after it, measures its
        gradients too (one ``_foreach_norm`` per outer backward, not one per
        checkpoint).
        """
        if torch.compiler.is_compiling():  # compiled autograd traces the hooks, and refuses queue_callback there
            self._measure_due_norms()
            return
        callback = self._norms_at_backward_end  # a new bound method: the engine holds the only strong reference
        try:
            torch.autograd.Variable._execution_engine.queue_callback(callback)
            self._norms_callback = weakref.ref(callback)
        except Exception:
            self._measure_due_norms()

    def _norms_at_backward_end(self) -> None:
        # Runs inside the user's loss.backward(): nothing may escape.
        self._norms_callback = None
        self.guard.guarded("grad_norm", self._measure_due_norms)
        if self._fresh:  # hooked in this backward (a change seen at its first hook), some perhaps too late
            self.guard.guarded("grad_norm", self._measure_fresh, False)

    @torch.no_grad()  # backward(create_graph=True) leaves gradients that require grad; out= refuses them
    def _measure_due_norms(self) -> None:
        """Write the norms of the gradients noted since the last call into their slots (no sync)."""
        due, self._norms_due = self._norms_due, []
        if not due:
            return
        latest = dict(due)  # a tensor noted twice (reentrant checkpointing): once
        # A gradient set to None since it was noted has nothing to measure.
        kept = [(index, latest[index].grad) for index in sorted(latest) if latest[index].grad is not None]
        if not kept:
            return
        indices = [index for index, _ in kept]
        norms = torch._foreach_norm([grad for _, grad in kept], 2, dtype=torch.float32)
        start = 0
        for end in range(1, len(indices) + 1):  # one stack per run of consecutive slots
            if end == len(indices) or indices[end] != indices[end - 1] + 1:
                torch.stack(norms[start:end], out=self._grad_slots[indices[start]:indices[end - 1] + 1])
                start = end

    def _settle_due_norms(self) -> None:
        """Norms still due (a backward that raised before its end, say): taken now; nothing stays queued."""
        self._norms_callback = None
        if self._norms_due:
            self.guard.guarded("grad_norm", self._measure_due_norms)

    def _capture_scale(self) -> None:
        if self._scaler is not None:
            if self._scaler._scale is None:  # no scaler.scale() yet (it sets the scale lazily): a later hook reads it
                return
            self._scale_slot.copy_(self._scaler._scale)
        self._scale_captured = True

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._discarded is not None:
            self.guard.guarded(DISCARDED_OUTPUTS, self._record_discarded_outputs)
        self._settle_due_norms()
        self._track_params(in_backward=False)
        if self._fresh:
            self.guard.guarded("grad_norm", self._measure_fresh)
        # The lr this step uses: a scheduler stepped before probe.step() would show the next one.
        if "lr" not in self._disabled:
            try:
                self._read_lrs(self._step_lrs)
                self._lrs_read = True
            except Exception as error:
                self.guard.fail("lr", error)
        # Once per cadence step: extra optimizer steps before probe.step() are not measured.
        if self._cadence and not self._updated and "layer_stats" not in self._disabled:
            self.guard.guarded("layer_stats", self._tracker.before_step)

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepped = True
        if self._zero_check is not None:
            self._zero_check.arm()
        if self._cadence and "layer_stats" not in self._disabled:
            self.guard.guarded("layer_stats", self._record_update)

    def _record_update(self) -> None:
        result = self._tracker.after_step()
        if result is None:
            return
        weight_norms, ratios = result
        block = self._layer_values[self._layer_row]
        block[_LAYER_WEIGHT].copy_(weight_norms)
        block[_LAYER_UPDATE].copy_(ratios)
        self._updated = True

    # ------------------------------------------------------------------- step

    def step(self, loss: Any = None, *, epoch: float | None = None) -> None:
        """Mark one optimizer step (call it once per ``optimizer.step()``, after it).

        Args:
            loss: the step's training loss: a one-element tensor (no ``.item()``
                needed; nothing is read back until the next flush) or a number.
            epoch: the current epoch (kept until changed).
        """
        if not self._watched:
            raise ProbeError("probe.step(): call probe.watch(model, optimizer) first")
        if self.closed:
            raise ProbeError("probe.step(): this probe is closed")
        loss_tensor = None if loss is None else validated_loss(loss, where="probe.step")
        if epoch is not None:
            if not is_number(epoch):
                raise TypeError(f"probe.step: epoch must be a number, got {type(epoch).__name__}")
            self.epoch = float(epoch)
        if self._pending and self._drain(wait=False):
            self._publish.set()
        if self.step_count + 1 == self._first_step:
            self._remove_autocast_hooks()  # whether or not the lint below can run
            self.guard.guarded("lint", self._lint_first_step)
        if self._discarded is not None and self.step_count + 1 >= self._first_step + DISCARDED_WAIT_STEPS:
            self._remove_output_hooks()  # no optimizer step ran (a scaler skipping every one): nothing named

        self.step_count += 1
        step = self.step_count
        row = self._row
        self._host_steps[row] = step
        self._host_epochs[row] = np.nan if self.epoch is None else self.epoch
        self._host_walls[row] = time.time()
        skipped = self._scaler is not None and not self._stepped
        if not self._stepped and self._scaler is None and "no_optimizer_step" not in self._warned:
            self._warned.add("no_optimizer_step")
            message = (f"probe.step() at step {step} came without an optimizer.step() since the last one; call "
                       "probe.step() once per optimizer step (after it), not per micro-batch (an optimizer made "
                       "after watch() is not seen: watch the one that steps)")
            warnings.warn(f"traindoctor probe: {message}", RuntimeWarning, stacklevel=2)
            # Kept with the run: the warning scrolls away, and `diagnose` judged the micro-batch
            # records as optimizer steps (a loop calling it 4 times a step read as an lr too low).
            self.guard.guarded("events", lambda: self.writer.add_event(
                "step_without_optimizer_step", message, step=step))
        self._host_skipped[row] = skipped
        self._settle_due_norms()
        grads = self._any_fired and "grad_norm" not in self._disabled
        self._host_grads[row] = grads

        if loss is None:
            self._host_loss_kind[row] = 0
        elif loss_tensor is None:
            self._host_loss_kind[row] = 2
            self._host_loss[row] = float(loss)
        elif "loss" not in self._disabled:
            self._host_loss_kind[row] = 1
            try:
                self._cells[row][_LOSS].copy_(loss_tensor.detach() if loss_tensor.dim() == 0 else loss_tensor.detach().view(()))
            except Exception as error:
                self.guard.fail("loss", error)
        self._host_lr_recorded[row] = False
        if "lr" not in self._disabled:
            try:
                self._record_lrs(row)
            except Exception as error:
                self.guard.fail("lr", error)
        cells = self._cells[row]
        if grads:
            try:
                self._record_grad_norm(cells[_GRAD_NORM])
            except Exception as error:
                self.guard.fail("grad_norm", error)
        self._host_amp_recorded[row] = False
        if self._scaler is not None and "amp" not in self._disabled:
            try:
                self._record_scale(cells[_AMP_SCALE])
                self._host_amp_recorded[row] = True
            except Exception as error:
                self.guard.fail("amp", error)
        if self._cadence:
            self.guard.guarded("layer_stats", self._close_layer_record, step, grads and not skipped)
        if self._zero_check is not None and self._zero_check.measuring:
            self.guard.guarded(ZERO_GRAD_CHECK, self._zero_check.close_step, row, self._any_fired)
        if grads:
            self._grad_slots.zero_()
            self._fired = [False] * len(self._fired)
            self._any_fired = False
        self._scale_captured = False
        self._stepped = False

        if self._model.training != self._in_training_mode:
            self._in_training_mode = self._model.training
            if not self._in_training_mode:
                self._add_event("eval_mode_during_training",
                                "probe.step() called while model.training is False (model.eval() "
                                "still in effect: dropout and batch-norm behave as in evaluation)", step)
            else:  # the end of a stretch in eval mode (it starts True): the rule reports its steps
                self._add_event("train_mode_restored",
                                f"model.training is True again: steps in eval mode ended at step {step - 1}", step)
        if skipped:
            self._add_event("amp_step_skipped", "GradScaler skipped the optimizer step (inf/NaN gradients)", step)
        self._row = row + 1
        self._cadence = (step + 1) % self.layer_every == 0
        if (self._row >= self.flush_every_steps or self._layer_row >= len(self._layer_steps)
                or time.monotonic() - self._last_flush >= self.flush_every_s):
            self.flush()
            # O(parameters) once per flush, not per step.
            if "param_tracking" not in self._disabled:
                self.guard.guarded("param_tracking", self._audit_params)
        if self._stop_finding is not None and self._raise_on_stop and not self._stop_raised:
            self._stop_raised = True
            self.record_stop("raise_on_stop")
            raise TrainingStopped(self._stop_message(), self._stop_finding)

    def _add_event(self, kind: str, detail: str, step: int) -> None:
        """An event from the step path, guarded: the store refusing it must not stop training."""
        self.guard.guarded("events", lambda: self.writer.add_event(kind, detail, step=step))
        self._live_event(kind, detail, step)

    def _live_event(self, kind: str, detail: str, step: int) -> None:
        if self._live is not None and "live" not in self._disabled:
            self.guard.guarded("live", lambda: self._live.add_event(kind, detail, step=step))
    def _record_lrs(self, row: int) -> None:
        if self._lrs_read:
            self._host_lrs[row] = self._step_lrs
        else:  # no optimizer step (skipped by the scaler): the groups' current lr
            self._read_lrs(self._host_lrs[row])
        self._lrs_read = False
        self._host_lr_recorded[row] = True

    def _read_lrs(self, lrs: np.ndarray) -> None:
        # The groups the probe knows: one added since is read once it is tracked.
        for index, group in zip(range(len(lrs)), self._optimizer.param_groups):
            lr = group["lr"]
            # A tensor lr (capturable optimizers) is read on the host: a sync if it lives on a GPU.
            lrs[index] = float(lr) if not isinstance(lr, torch.Tensor) else float(lr.detach().cpu())

    def _record_grad_norm(self, cell: torch.Tensor) -> None:
        torch.linalg.vector_norm(self._grad_slots, out=cell)
        if self._scaler is not None:
            cell.div_(self._scale_slot)

    def _record_scale(self, cell: torch.Tensor) -> None:
        if not self._scale_captured and self._scaler._scale is not None:
            self._scale_slot.copy_(self._scaler._scale)
        cell.copy_(self._scale_slot)

    def _close_layer_record(self, step: int, grads: bool) -> None:
        record = self._layer_row
        if grads and "layer_stats" not in self._disabled:
            self._layer_values[record, _LAYER_GRAD].copy_(self._grad_slots)
            if self._scaler is not None:
                self._layer_values[record, _LAYER_GRAD].div_(self._scale_slot)
            self._layer_fired[record] = self._fired
        else:
            self._layer_fired[record] = False
        self._layer_updated[record] = self._updated and self._stepped
        if not self._stepped:
            self._tracker.discard()
        self._updated = False
        self._layer_steps[record] = step
        self._layer_epochs[record] = np.nan if self.epoch is None else self.epoch
        self._layer_walls[record] = time.time()
        self._layer_row = record + 1

    # -------------------------------------------------------- log and evaluate

    def log(self, values: Mapping[str, Any], *, split: str = "train") -> None:
        """Record user metrics at the current step.

        Args:
            values: metric name → one-element tensor (read at the next flush) or number.
            split: ``train``, ``val``, ``test`` or any non-empty name.
        """
        if self.closed:
            raise ProbeError("probe.log(): this probe is closed")
        check_name(split, "probe.log: split")
        if not isinstance(values, Mapping):
            raise TypeError(f"probe.log: values must be a dict of name -> number, got {type(values).__name__}")
        checked = []
        for name, value in values.items():
            check_name(name, "probe.log: a metric name")
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"probe.log: {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
            elif not is_number(value):
                raise TypeError(f"probe.log: {name!r} must be a number or a scalar tensor, got {type(value).__name__}")
            checked.append((name, value))
        epoch = np.nan if self.epoch is None else self.epoch
        wall = time.time()
        for name, value in checked:
            if isinstance(value, torch.Tensor):
                # The clone is one kernel: the user may update the tensor in place later.
                self._logged_tensors.append(value.detach().reshape(()).clone())
                self._logged.append((self.step_count, epoch, wall, split, name))
            else:
                self.writer.add_scalars(step=self.step_count, name=name, value=float(value), split=split,
                                        epoch=epoch, wall_time=wall)

    def evaluate(self, split: str = "val") -> Evaluation:
        """An evaluation pass: ``with probe.evaluate("val") as ev: ev.update(logits, targets, loss=...)``.

        Loss, accuracy and confusion counts are recorded at the current step
        with this split when the block ends without an exception.
        """
        if self.closed:
            raise ProbeError("probe.evaluate(): this probe is closed")
        check_name(split, "probe.evaluate: split")
        if split == "train":
            # The pass's loss would land in the training steps' own (train, loss) series, twice at one step.
            raise ValueError("probe.evaluate: split 'train' is the training steps' own series; name a pass "
                             "over the training data otherwise, e.g. probe.evaluate('train_eval')")
        return Evaluation(split, num_classes=self.num_classes, guard=self.guard,
                          position=lambda: (self.step_count, self.epoch),
                          on_first_update=lambda name: self.guard.guarded("lint", self._check_eval_mode, name),
                          on_finish=self._finish_evaluation, on_narrow_logits=self._narrow_logits)

    def _narrow_logits(self, split: str, words: str) -> None:
        """Warn once per run, from ``ev.update`` in the user's code (a host-side shape: no device read), that
        the logits have fewer classes than num_classes."""
        if self._warned_narrow_logits:
            return
        self._warned_narrow_logits = True
        message = (f"traindoctor probe: evaluation {split!r} got {words} but num_classes={self.num_classes}; the "
                   "classes beyond them can never be predicted (is num_classes or the model's head size wrong?)")
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        except Warning:  # a filter set to "error" must not end the training loop: the probe never does
            print(message, file=sys.stderr)

    def _check_eval_mode(self, split: str) -> None:
        model = getattr(self, "_model", None)
        if model is not None and model.training:
            detail = (f"evaluation pass {split!r} ran with model.training True (call model.eval(): "
                      "dropout and batch-norm statistics change the result)")
            self.writer.add_event("train_mode_during_eval", detail, step=self.step_count)
            self._live_event("train_mode_during_eval", detail, self.step_count)

    def _finish_evaluation(self, result: EvaluationResult) -> None:
        self._evaluations.append(result)
        self.flush()

    # ---------------------------------------------------------------- flushing

    def flush(self) -> None:
        """Start copying buffered values to the host; they reach the store once the copy lands.

        On CUDA the copy is non-blocking and finished on a later ``step``; on
        the CPU it completes here.
        """
        if "flush" in self._disabled:
            self._discard_buffered()
            self._last_flush = time.monotonic()
            return
        try:
            transfer = self._snapshot()
            if transfer is not None:
                self._pending.append(transfer)
            if self._drain(wait=False):
                # Publish now, so that killing the process keeps everything up to the
                # last flush; writing Parquet takes ~10 ms, so a thread does it.
                self._publish.set()
        except Exception as error:
            self.guard.fail("flush", error)
            self._discard_buffered()
        self._last_flush = time.monotonic()

    def _discard_buffered(self) -> None:
        """Forget the buffered rows once flushing is off, so the buffers are filled from their first row again.

        Kept, the full step buffer made the next ``step()`` raise IndexError in
        the user's loop (a model on the meta device, whose values cannot be
        copied out): flushing is off with one warning, training goes on.
        """
        self._row = 0
        self._layer_row = 0
        self._logged, self._logged_tensors = [], []
        self._evaluations = []

    def _copy_to_host(self, tensor: torch.Tensor, transfer: _Transfer) -> torch.Tensor:
        if tensor.device.type == "cpu":
            return tensor.clone()
        if tensor.device.type == "cuda" and transfer.event is None:
            transfer.event = torch.cuda.Event()
        # non_blocking D2H lands in pinned memory: no synchronisation here.
        return tensor.to("cpu", non_blocking=True)

    def _snapshot(self) -> _Transfer | None:
        rows = self._row if self._watched else 0
        records = self._layer_row if self._watched else 0
        if not (rows or records or self._logged or self._evaluations):
            return None
        transfer = _Transfer(event=None, layer_names=self._names, group_names=self._group_names)
        if rows:
            transfer.values = self._copy_to_host(self._values[:rows], transfer)
            transfer.host = {
                "step": self._host_steps[:rows].copy(), "epoch": self._host_epochs[:rows].copy(),
                "wall": self._host_walls[:rows].copy(), "lr": self._host_lrs[:rows].copy(),
                "lr_recorded": self._host_lr_recorded[:rows].copy(),
                "loss": self._host_loss[:rows].copy(), "loss_kind": self._host_loss_kind[:rows].copy(),
                "grads": self._host_grads[:rows].copy(), "skipped": self._host_skipped[:rows].copy(),
                "amp_recorded": self._host_amp_recorded[:rows].copy(),
            }
            if self._zero_check is not None:
                transfer.zeroing_flags, values = self._zero_check.snapshot(rows)
                if values is not None:
                    transfer.zeroing_values = self._copy_to_host(values, transfer)
        if records:
            transfer.layer_values = self._copy_to_host(self._layer_values[:records], transfer)
            transfer.layer_host = {
                "step": self._layer_steps[:records].copy(), "epoch": self._layer_epochs[:records].copy(),
                "wall": self._layer_walls[:records].copy(), "fired": self._layer_fired[:records].copy(),
                "updated": self._layer_updated[:records].copy(),
            }
        if self._logged:
            transfer.logged = self._copy_to_host(
                torch.stack([t.to(self._logged_tensors[0].device, torch.float64) for t in self._logged_tensors]), transfer)
            transfer.logged_rows = self._logged
            self._logged, self._logged_tensors = [], []
        for result in self._evaluations:
            totals = None
            parts = [t for t in (result.loss_sum, result.loss_weight) if t is not None]
            parts += [t.to(torch.float64) for t in (result.correct, result.count, result.out_of_range, result.multi_label)
                      if t is not None]
            if parts:
                totals = self._copy_to_host(torch.stack([p.to(parts[0].device) for p in parts]), transfer)
            confusion = None if result.confusion is None else self._copy_to_host(result.confusion, transfer)
            transfer.evaluations.append((result, totals, confusion))
        self._evaluations = []
        if transfer.event is not None:
            transfer.event.record()  # after every copy above, on the current stream
        if rows:
            self._values[:rows].fill_(float("nan"))
            if transfer.zeroing_values is not None:
                self._zero_check.reset(rows)
        if records:
            self._layer_values[:records].fill_(float("nan"))
        self._row = 0
        self._layer_row = 0
        return transfer

    def _set_aside(self) -> None:
        """Start the host copy of everything buffered, to be written at the next drain (no publish)."""
        transfer = self._snapshot()
        if transfer is not None:
            self._pending.append(transfer)

    def _drain(self, *, wait: bool) -> bool:
        """Hand landed transfers to the writer; True if any was."""
        written = False
        while self._pending:
            transfer = self._pending[0]
            if not transfer.ready():
                if not wait:
                    break
                transfer.wait()
            self._pending.pop(0)
            self.guard.guarded("flush", self._write, transfer)
            written = True
        if written and self._live is not None:
            self._live_due = True
        if self._live_due and (wait or self._live_urgent or self._live_allowed()):
            self._live_check()
        return written

    def _live_allowed(self) -> bool:
        """Whether the live-check budget allows a check now: the time since the last one
        is at least its cost divided by ``live_budget``."""
        if self._live_budget is None:
            return True
        return time.perf_counter() - self._live_done_at >= self._live_cost_s / self._live_budget

    def _write(self, transfer: _Transfer) -> None:
        if transfer.values is not None:
            self._write_steps(transfer.values.numpy().astype(np.float64), transfer.host, transfer.group_names)
        if transfer.zeroing_flags is not None and self._zero_check is not None:
            self.guard.guarded(ZERO_GRAD_CHECK, self._judge_zeroing, transfer)
        if transfer.layer_values is not None:
            self._write_layers(transfer.layer_values.numpy().astype(np.float64), transfer.layer_host,
                               transfer.layer_names)
        if transfer.logged is not None:
            values = transfer.logged.numpy()
            for (step, epoch, wall, split, name), value in zip(transfer.logged_rows, values):
                self.writer.add_scalars(step=step, name=name, value=float(value), split=split, epoch=epoch,
                                        wall_time=wall)
        for result, totals, confusion in transfer.evaluations:
            self._write_evaluation(result, None if totals is None else totals.numpy(),
                                   None if confusion is None else confusion.numpy())

    def _add_scalars(self, **columns: Any) -> None:
        """Buffer values in the writer and hand the same host numbers to the live checks."""
        self.writer.add_scalars(**columns)
        if self._live is not None and "live" not in self._disabled:
            try:
                self._live.add_scalars(**columns)
            except Exception as error:  # apart from "flush": the values are written whatever the checks do
                self.guard.fail("live", error)

    def _write_steps(self, values: np.ndarray, host: dict[str, np.ndarray], group_names: tuple[str, ...]) -> None:
        steps, epochs, walls = host["step"], host["epoch"], host["wall"]
        add = self._add_scalars
        loss = np.where(host["loss_kind"] == 1, values[:, _LOSS], host["loss"])
        has_loss = host["loss_kind"] > 0
        if has_loss.any():
            add(step=steps[has_loss], name="loss", value=loss[has_loss], epoch=epochs[has_loss], wall_time=walls[has_loss])
            # Apart from "flush": events the store refuses must not take the flush's values with them.
            self.guard.guarded("events", self._nan_loss_events, steps[has_loss], loss[has_loss])
        # Per row, not by what is disabled now: a statistic turned off later keeps its earlier values.
        with_lr = host["lr_recorded"]
        if with_lr.any():
            groups, count = len(group_names), int(with_lr.sum())
            add(step=np.repeat(steps[with_lr], groups), name="lr", value=host["lr"][with_lr].reshape(-1),
                layer=group_names * count, epoch=np.repeat(epochs[with_lr], groups),
                wall_time=np.repeat(walls[with_lr], groups))
        measured = host["grads"] & ~host["skipped"]
        if measured.any():
            add(step=steps[measured], name="grad_norm", value=values[measured, _GRAD_NORM],
                epoch=epochs[measured], wall_time=walls[measured])
            self._live_urgent |= not bool(np.isfinite(values[measured, _GRAD_NORM]).all())
        if self._scaler is not None:
            add(step=steps, name="amp_skipped", value=host["skipped"].astype(np.float64), epoch=epochs, wall_time=walls)
            with_scale = host["amp_recorded"]
            if with_scale.any():
                add(step=steps[with_scale], name="amp_scale", value=values[with_scale, _AMP_SCALE],
                    epoch=epochs[with_scale], wall_time=walls[with_scale])

    def _judge_zeroing(self, transfer: _Transfer) -> None:
        """Record a ``grads_not_zeroed`` event (once) when the flushed steps show gradients kept across steps."""
        values = None if transfer.zeroing_values is None else transfer.zeroing_values.numpy()
        found = self._zero_check.judge(transfer.host["step"], transfer.zeroing_flags, values)
        if found is not None:
            step, detail = found
            self._add_event(GRADS_NOT_ZEROED_EVENT, detail, step)

    def _nan_loss_events(self, steps: np.ndarray, loss: np.ndarray) -> None:
        bad = ~np.isfinite(loss)
        self._live_urgent |= bool(bad.any())
        previous = getattr(self, "_last_loss_bad", False)
        for index in np.flatnonzero(bad):
            # One event per stretch of consecutive non-finite losses.
            if (index == 0 and not previous) or (index > 0 and not bad[index - 1]):
                self.writer.add_event("nan_loss", f"training loss is {loss[index]} at step {int(steps[index])}",
                                      step=int(steps[index]))
        self._last_loss_bad = bool(bad[-1]) if len(bad) else previous

    def _write_layers(self, values: np.ndarray, host: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
        for record in range(len(host["step"])):
            step, epoch, wall = int(host["step"][record]), host["epoch"][record], host["wall"][record]
            fired = host["fired"][record]
            if fired.any():
                layer = names if fired.all() else tuple(n for n, f in zip(names, fired) if f)
                self._add_scalars(step=step, name="grad_norm", layer=layer,
                                        value=values[record, _LAYER_GRAD][fired] if not fired.all() else values[record, _LAYER_GRAD],
                                        epoch=epoch, wall_time=wall)
            if host["updated"][record]:
                self._add_scalars(step=step, name="weight_norm", layer=names, value=values[record, _LAYER_WEIGHT],
                                        epoch=epoch, wall_time=wall)
                self._add_scalars(step=step, name="update_ratio", layer=names, value=values[record, _LAYER_UPDATE],
                                        epoch=epoch, wall_time=wall)

    def _write_evaluation(self, result: EvaluationResult, totals: np.ndarray | None, confusion: np.ndarray | None) -> None:
        epoch = np.nan if result.epoch is None else result.epoch
        add = self._add_scalars
        parts = list(totals) if totals is not None else []
        loss_sum = loss_weight = 0.0
        if result.loss_sum is not None:
            loss_sum, loss_weight = parts.pop(0), parts.pop(0)
        loss_sum += result.loss_host
        loss_weight += result.loss_host_weight
        if loss_weight > 0:
            add(step=result.step, name="loss", value=loss_sum / loss_weight, split=result.split, epoch=epoch)
        correct, count = (parts.pop(0), parts.pop(0)) if result.correct is not None else (0, 0)
        left_out = int(parts.pop(0)) if result.out_of_range is not None else 0
        multi_label = int(parts.pop(0)) if result.multi_label is not None else 0
        if multi_label > 0:
            confusion = None  # no one class per example: accuracy and counts would describe another problem
            if not self._warned_multi_label:
                self._warned_multi_label = True
                _warn_from_flush(
                    f"traindoctor probe: evaluation {result.split!r} at step {result.step} got {multi_label} target "
                    "row(s) that do not sum to 1 (multi-hot: a multi-label problem); accuracy and confusion counts "
                    "assume one class per example and are not recorded, the loss is (pass ev.update(loss=...) alone "
                    "to silence this)")
        elif result.correct is not None and count > 0:
            add(step=result.step, name="accuracy", value=correct / count, split=result.split, epoch=epoch)
        if result.out_of_range is not None:
            if left_out > 0 and not self._warned_target_range:
                self._warned_target_range = True
                _warn_from_flush(
                    f"traindoctor probe: evaluation {result.split!r} at step {result.step} got {left_out} target(s) "
                    "at or above the class count; such targets are left out of accuracy and confusion counts "
                    "(are the labels 1-based, or num_classes too small?)")
        if confusion is not None:
            size = int(math.isqrt(len(confusion) - 1))
            self.writer.add_confusion(step=result.step, counts=confusion[:-1].reshape(size, size), split=result.split,
                                      epoch=None if result.epoch is None else result.epoch)

    # ------------------------------------------------------------ live checks

    def _live_check(self) -> None:
        """Run the live rules on what this flush wrote (host numbers: no device read) and raise what is new."""
        self._live_due = self._live_urgent = False
        if "live" in self._disabled:
            return
        started = time.perf_counter()
        try:
            found = self._live.check()
        except Exception as error:
            self.guard.fail("live", error)
            return
        finally:
            self._live_done_at = time.perf_counter()
            self._live_cost_s = self._live_done_at - started
        for finding in found:
            self._raise_finding(finding)

    def _raise_finding(self, finding: Any) -> None:
        from traindoctor.diagnosis.finding import SEVERITY_RANK  # loaded with the live rules

        self.live_findings.append(finding)
        step = self.step_count
        self.guard.guarded("events", lambda: self.writer.add_event(
            "live_finding", json.dumps(finding.to_dict(), default=str), step=step))
        if (self._stop_on is not None and self._stop_finding is None
                and SEVERITY_RANK[finding.severity] >= SEVERITY_RANK[self._stop_on]):
            self._stop_finding = finding
            self.guard.guarded("events", lambda: self.writer.add_event(
                "stop_requested", json.dumps({"stop_on": self._stop_on, "finding": finding.to_dict()}, default=str),
                step=step))
        if self._on_finding is not None:
            try:
                self._on_finding(finding)
            except Exception as error:  # the user's callback: warned about, never allowed to stop training
                self._warn_once("on_finding", f"traindoctor probe: on_finding raised {type(error).__name__}: {error} "
                                f"(for the live finding {finding.rule}); training goes on, later findings are still "
                                "passed to it (this warning is shown once)")

    @property
    def should_stop(self) -> bool:
        """True once a live finding met ``stop_on``: check it in the loop and stop training."""
        return self._stop_finding is not None

    @property
    def stop_finding(self) -> Any:
        """The live finding that met ``stop_on`` (a ``Finding``), None while ``should_stop`` is false."""
        return self._stop_finding

    def record_stop(self, by: str) -> None:
        """Record, once, that training was stopped because of :attr:`stop_finding` (a ``training_stopped`` event).

        The Lightning and HF callbacks call it when they stop their trainer;
        ``raise_on_stop`` when it raises. Nothing is recorded while
        ``should_stop`` is false.

        Args:
            by: who stopped training (``"lightning"``, ``"transformers"``, ``"raise_on_stop"``, …).
        """
        if self._stop_finding is None or self._stop_recorded or self.closed:
            return
        self._stop_recorded = True
        self._add_event("training_stopped", json.dumps(
            {"by": by, "stop_on": self._stop_on, "finding": self._stop_finding.to_dict()}, default=str),
            self.step_count)

    def _stop_message(self) -> str:
        finding = self._stop_finding
        return (f"traindoctor: training stopped at step {self.step_count}: the live {finding.severity} finding "
                f"{finding.rule} ({finding.title}) met stop_on={self._stop_on!r}. {finding.message}")

    # --------------------------------------------------------------- failures

    @property
    def disabled(self) -> frozenset[str]:
        """Statistics turned off after an error."""
        return frozenset(self._disabled)

    # ----------------------------------------------------------------- closing

    def _on_sigterm(self, frame: Any) -> bool:
        self._terminated = True
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        self._termination_detail = f"SIGTERM received\n{stack}"
        if callable(self._sigterm.previous):
            # Someone else (a framework, the user) handles SIGTERM and may shut down
            # gracefully: publish what we have and keep recording; close() marks the crash.
            # Guarded: an error raised in a signal handler would surface anywhere in
            # the training loop, and the previous handler would never run.
            self.guard.guarded("flush", self._publish_now)
            return False
        if self._entered:
            return True  # __exit__ records the crash while the Terminated exception unwinds
        try:
            self.close("crashed", detail=self._termination_detail)
        except Exception as error:  # the process must still end as SIGTERM asks
            self.guard.fail("close", error)
        return False

    def _publish_now(self) -> None:
        self.flush()
        self._drain(wait=True)
        try:
            self.writer.flush()
        except StoreError as error:
            # The store cannot be written now: the writer keeps the rows and retries them, as
            # _publish_loop lets it. Raised into the guard, it turned the probe's flushing off
            # and every later step was lost (a SIGTERM during a full disk).
            self.writer.record_error(error)

    def close(self, status: str | None = None, *, detail: str | None = None) -> None:
        """Remove the hooks, publish everything buffered, and record the final status (idempotent)."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self._close_at_exit)
        self._publish.set()
        self._publisher.join(timeout=30)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._watched:
            for _, handle, _ in self._hooked.values():
                handle.remove()
            self._hooked = {}
            if self._zero_check is not None:
                self._zero_check.remove()
            self._remove_autocast_hooks()
            self._remove_output_hooks()
        try:
            transfer = self._snapshot()
            if transfer is not None:
                self._pending.append(transfer)
            self._drain(wait=True)
        except Exception as error:
            self.writer.errors.append(f"probe flush at close failed: {error}")
            if self.strict:
                raise
        if status is None:
            status = "crashed" if self._terminated else "finished"
        if status == "crashed" and detail is None and self._terminated:
            detail = self._termination_detail
        # The crash is placed at the last optimizer step done (None before the first).
        self.writer.close(status, detail=detail, step=self.step_count if self.step_count >= self._first_step else None)
        self._sigterm.uninstall()
        # On an object store, compacting downloads every rank's segments first: only for one rank.
        remote = self.writer.run_dir is None
        if status == "finished" and self.rank == 0 and self.compact_on_close and not (remote and self.world_size > 1):
            self._compact()

    def _close_at_exit(self) -> None:
        """Close a probe its script never closed (no ``with``, no ``close()``) when the interpreter exits.

        Without it the buffered steps (up to 2 s or 256 of them: all of a
        short run) were lost and the run stayed ``running`` until its
        heartbeat went stale. An exception that ended the script
        (``sys.last_value``, set by the interpreter before exit handlers
        run) makes the run ``crashed`` with its traceback, as in a ``with``.
        """
        if self.closed:
            return
        error = getattr(sys, "last_value", None)
        try:
            if error is None or (isinstance(error, SystemExit) and error.code in (None, 0)):
                self.close()
            else:
                self.close("crashed", detail="".join(traceback.format_exception(type(error), error, error.__traceback__)))
        except Exception as failure:  # the store went away first: one line, not a traceback at exit
            warnings.warn(f"traindoctor: closing run {self.run_id} at exit failed: {type(failure).__name__}: {failure}",
                          RuntimeWarning, stacklevel=1)

    def _compact(self) -> None:
        """Merge the finished run's segments into one sorted file (DESIGN.md).

        The compactor (and DuckDB with it) is imported only here, after
        training, so recording never loads it. A failure leaves the segments
        as they are, still fully readable, and only warns.
        """
        try:
            from traindoctor.store.compact import compact_run
            from traindoctor.store.reader import Store

            compact_run(Store(self.writer.store), self.writer.run_id)
        except Exception as error:
            if self.strict:
                raise
            warnings.warn(f"traindoctor: compacting run {self.writer.run_id} failed "
                          f"(its segments stay readable): {type(error).__name__}: {error}", RuntimeWarning, stacklevel=3)

    def __enter__(self) -> "Probe":
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._entered = False
        if exc_type is None:
            self.close()
            return
        if isinstance(exc, TrainingStopped) and exc.finding is self._stop_finding:
            self.close("finished")  # stopped on purpose, as asked: the training_stopped event says why
            return
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            self.close()  # sys.exit(0): the script ended on purpose, not a crash
            return
        detail = "".join(traceback.format_exception(exc_type, exc, tb))
        if isinstance(exc, Terminated):
            detail = self._termination_detail + detail
        self.close("crashed", detail=detail)
        if isinstance(exc, Terminated):
            self._sigterm.deliver_default()


def _check_live_options(live: Any, on_finding: Any, stop_on: Any, raise_on_stop: Any) -> None:
    """``Probe``'s live-diagnosis arguments, checked before anything is written."""
    if stop_on not in (None, "warning", "critical"):
        raise ValueError(f"stop_on must be 'critical', 'warning' or None, got {stop_on!r}")
    if on_finding is not None and not callable(on_finding):
        raise TypeError(f"on_finding must be callable, got {type(on_finding).__name__}")
    if raise_on_stop and stop_on is None:
        raise ValueError("raise_on_stop=True needs stop_on ('critical' or 'warning')")
    if not live and (on_finding is not None or stop_on is not None):
        raise ValueError("on_finding and stop_on need the live checks: leave live=True")


def _listed(names: Sequence[str]) -> str:
    """``names`` for a message: the first few, then "and N more"."""
    shown = ", ".join(repr(name) for name in names[:_LISTED_NAMES])
    more = len(names) - _LISTED_NAMES
    return ("parameter " if len(names) == 1 else "parameters ") + shown + (f" and {more} more" if more > 0 else "")
