"""What the probe's parts share: argument checks, and the guard that turns a failing statistic off.

``probe.core`` (the ``Probe``) and ``probe.evaluation`` (its evaluation
passes) both import this module; neither imports the other's internals.

- Checks raise at the call with a one-line message: a misuse is the user's
  to fix and is never swallowed.
- :class:`StatisticGuard` is the other rule, for errors inside the probe's own
  measuring: the statistic is turned off with one warning and training goes
  on (``strict=True`` raises instead, for tests).
"""

from __future__ import annotations

import enum
import itertools
import math
import numbers
import os
import re
import warnings
from typing import Any, Callable, Mapping

import torch

# Characters a name may not hold: control characters (C0, DEL, C1: a NUL breaks
# C readers, an ESC rewrites the terminal that prints the name) and lone
# surrogates (``os.fsdecode`` makes them from non-UTF-8 bytes; the Parquet
# writer cannot encode them and would drop the whole flush).
_UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# How deep a config may nest before it is refused: deeper is a bug (or a cycle).
MAX_CONFIG_DEPTH = 64
# A config value JSON cannot hold is kept as its repr, cut to this many
# characters: the repr of a module or a dataset can run to megabytes, and
# every listing of the store reads run.json again.
MAX_CONFIG_REPR = 1000
# A list, tuple, set or array longer than this is data, not a hyperparameter (a
# vocabulary, class weights per token): kept as its text, cut as a repr is.
MAX_CONFIG_ITEMS = 1000
# Values a config may hold in all, as for imported configs
# (store/importers/common.py): run.json is read by every listing of the store,
# and 3M values made a 59 MB run.json and a 39 s start.
MAX_CONFIG_VALUES = 50_000
_INT64_LIMIT = 2**63
_FLOAT_LIMIT = 2**1024  # the first integer a float64 cannot hold


def check_name(value: Any, what: str) -> str:
    """``value`` when it is a non-empty string that every layer can store and show.

    A run, project, split, class or metric name must be a ``str`` with a
    non-blank character and no control character or lone surrogate; anything
    else raises ``ValueError`` naming ``what``, before a row is buffered.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    unsafe = _UNSAFE_CHARACTERS.search(value)
    if unsafe is not None:
        raise ValueError(f"{what} must not hold control characters or lone surrogates, got {value!r} "
                         f"(character {unsafe.group()!r} at {unsafe.start()})")
    return value


def escaped_name(value: str) -> str:
    """``value`` with each control character or lone surrogate written as its escape (``\\x1b``, ``\\udcff``).

    For names the user did not choose in a call (``named_parameters()`` names,
    config keys): recorded readably instead of refused.
    """
    if _UNSAFE_CHARACTERS.search(value) is None:
        return value
    return _UNSAFE_CHARACTERS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), value)


def checked_config(config: Mapping[Any, Any], what: str = "config") -> dict[str, Any]:
    """A copy of ``config`` that run.json can hold, made before anything is written.

    The rule: keys must be strings, ints, floats, bools or None (as in JSON;
    the others become their JSON text: ``1`` → ``"1"``, ``True`` → ``"true"``);
    strings are kept, with control characters and lone surrogates escaped;
    integers beyond int64 become floats (±inf past float64); mappings, lists, tuples and sets are copied recursively (sets sorted by
    their text); bools, ints, floats and None are kept; numpy scalars and
    arrays and one-element real tensors become Python numbers and lists;
    paths, ``torch.device``, ``torch.dtype`` and enum members become their
    text (``/data/x``, ``cuda:0``, ``torch.bfloat16``, the member's name);
    anything else becomes its ``repr``, cut to ``MAX_CONFIG_REPR``
    characters, and so does a sequence or array of more than
    ``MAX_CONFIG_ITEMS`` items. A key of another type, two keys that become
    the same text, a cycle, nesting deeper than ``MAX_CONFIG_DEPTH`` or more
    than ``MAX_CONFIG_VALUES`` values in all raises ``TypeError`` or
    ``ValueError`` naming where.

    Example:
        >>> checked_config({"lr": 0.1, 3: (1, 2), "fn": print})
        {'lr': 0.1, '3': [1, 2], 'fn': '<built-in function print>'}
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{what} must be a mapping of hyperparameters, got {type(config).__name__}")
    walk = _Walk(what)
    return _config_mapping(config, what, 0, walk)


class _Walk:
    """What a config copy has seen so far: the containers being copied (cycles) and the values counted."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.open_ids: set[int] = set()
        self.values = 0

    def count(self, where: str) -> None:
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise ValueError(f"{self.what} holds more than {MAX_CONFIG_VALUES:,} values (at {where}); pass the "
                             "run's hyperparameters, not data such as a vocabulary or a dataset")


def _config_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return escaped_name(key)
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, numbers.Integral):
        return str(int(key))
    if isinstance(key, numbers.Real):
        return repr(float(key))
    raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; config keys must be strings "
                    "(or ints, floats, bools, None)")


def _config_mapping(config: Mapping[Any, Any], where: str, depth: int, walk: _Walk) -> dict[str, Any]:
    if id(config) in walk.open_ids:
        raise ValueError(f"{where} contains itself (a cycle); pass a config without cycles")
    walk.open_ids.add(id(config))
    result: dict[str, Any] = {}
    for key, value in config.items():
        text = _config_key(key, where)
        if text in result:
            raise ValueError(f"{where}: keys {key!r} and another both become {text!r}; rename one")
        result[text] = _config_value(value, f"{where}[{text!r}]", depth + 1, walk)
    walk.open_ids.discard(id(config))
    return result


def _cut_repr(value: Any, items: int | None = None) -> str:
    text = re.sub(r"\s+", " ", repr(value))  # an array's repr spans lines
    if len(text) > MAX_CONFIG_REPR:
        text = text[:MAX_CONFIG_REPR] + "…" + (f" ({items:,} items)" if items is not None else f" ({len(text)} characters)")
    elif items is not None:
        text += f" ({items:,} items)"
    return escaped_name(text)


def _config_value(value: Any, where: str, depth: int, walk: _Walk) -> Any:
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"{where}: config nests deeper than {MAX_CONFIG_DEPTH} levels")
    walk.count(where)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return escaped_name(value)
    if isinstance(value, numbers.Integral):
        if -_INT64_LIMIT <= value < _INT64_LIMIT:
            return int(value)
        # Past int64 (and past 4,300 digits JSON cannot even write): a float, ±inf at the far end.
        return float(value) if abs(value) < _FLOAT_LIMIT else (math.inf if value > 0 else -math.inf)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return _config_mapping(value, where, depth, walk)
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) > MAX_CONFIG_ITEMS:  # the text of its first items (the repr of all could take seconds)
            head = list(itertools.islice(iter(value), 200))
            return _cut_repr(type(value)(head) if isinstance(value, (list, tuple)) else head, len(value))
        if id(value) in walk.open_ids:
            raise ValueError(f"{where} contains itself (a cycle); pass a config without cycles")
        walk.open_ids.add(id(value))
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        result = [_config_value(item, f"{where}[{index}]", depth + 1, walk) for index, item in enumerate(items)]
        walk.open_ids.discard(id(value))
        return result
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value.item()  # once, at Probe(): a read from a GPU is fine here
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        if getattr(value, "size", 1) > MAX_CONFIG_ITEMS:
            return _cut_repr(value, int(value.size))
        walk.values -= 1  # counted again as what tolist() gives
        return _config_value(value.tolist(), where, depth, walk)  # numpy scalars and arrays
    if isinstance(value, (os.PathLike, torch.device, torch.dtype, enum.Enum)):
        # What the user wrote, not its repr: "/data/x", not "PosixPath('/data/x')"; "cuda:0", "torch.bfloat16".
        text = os.fspath(value) if isinstance(value, os.PathLike) else (
            value.name if isinstance(value, enum.Enum) else str(value))
        return escaped_name(str(text))
    return _cut_repr(value)


def check_positive_int(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer >= 1 (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def is_number(value: Any) -> bool:
    """True for a real Python or numpy number, False for bools and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validated_loss(loss: Any, *, where: str) -> torch.Tensor | None:
    """The loss as a tensor, None for a Python number; raises for anything else.

    Args:
        loss: a one-element real tensor or a number.
        where: the call named in the error message (``probe.step``, ``ev.update``).
    """
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"{where}: loss must be a scalar (one element), got a tensor of shape {tuple(loss.shape)}")
        if loss.is_complex():
            raise TypeError(f"{where}: loss must be real, got {loss.dtype}")
        return loss
    if is_number(loss):
        return None
    raise TypeError(f"{where}: loss must be a scalar tensor or a number, got {type(loss).__name__}")


class StatisticGuard:
    """Turns a statistic off after its first error, with one warning.

    Args:
        strict: raise the error instead (tests).

    Attributes:
        disabled: names of the statistics turned off. The probe's step path
            tests membership in this set directly: a method call per check
            would cost more than the check.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = bool(strict)
        self.disabled: set[str] = set()
        self._warned: set[str] = set()

    def fail(self, statistic: str, error: BaseException, *, also: tuple[str, ...] = ()) -> None:
        """Record that ``statistic`` failed: turn it off and warn once (raise when strict).

        Args:
            statistic: what failed.
            error: the exception.
            also: statistics that cannot be right without it, turned off with it
                (named in the same warning).
        """
        if self.strict:
            raise error
        self.disabled.add(statistic)
        self.disabled.update(also)
        if statistic not in self._warned:
            self._warned.add(statistic)
            with_it = f" (and with it {', '.join(repr(name) for name in also)})" if also else ""
            warnings.warn(
                f"traindoctor probe: recording {statistic!r} failed ({type(error).__name__}: {error}); "
                f"it is turned off{with_it} for the rest of this run, training goes on",
                RuntimeWarning, stacklevel=3,
            )

    def guarded(self, statistic: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``, or None when ``statistic`` is off or the call fails (which turns it off)."""
        if statistic in self.disabled:
            return None
        try:
            return function(*args)
        except Exception as error:
            self.fail(statistic, error)
            return None
