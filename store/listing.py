"""Filter, sort and page the run catalog: the one query language of ``traindoctor runs`` and the Runs page.

Each run is a flat record of fields (:func:`run_fields`) built from its
catalog summary, so a filter never opens a segment:

- ``run_id``, ``name``, ``project``, ``status``, ``steps`` (the last step),
  ``num_steps`` (training-loss steps), ``started`` and ``finished`` (Unix
  seconds), ``wall_time_s``;
- ``<split>.<metric>``: the last value of a global series (``val.loss``,
  ``train.loss``, ``val.accuracy``), ``best.<split>.<metric>`` its best value
  (smallest, largest for accuracy-like metrics);
- every hyperparameter by its flattened config key (``lr``,
  ``optimizer.betas``), also as ``config.<key>`` when a run field has the
  same name;
- ``critical``, ``warning``, ``info``: cached findings per severity (absent
  until the run is diagnosed), and ``diagnosed``.

Filter grammar (:func:`parse_filter`; several filters must all hold)::

    FILTER := KEY OP VALUE | "has:" WORD
    OP     := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"

- A VALUE that reads as a number (``1e-3``, ``64``) compares numerically
  with fields holding numbers or numeric text; otherwise ``=`` and ``!=``
  compare text exactly, ``<``/``>`` in text order, and ``~`` matches
  anywhere in the text, ignoring case (``name~resnet``). ``true``/``false``
  match booleans. Quotes around VALUE are dropped.
- A run without the KEY never matches (``!=`` included).
- ``has:critical``, ``has:warning``, ``has:info``: at least one cached
  finding at that severity or above; ``has:RULE`` (``has:loss_spike``): a
  cached finding of that rule. Undiagnosed runs never match.

User text is parsed into (key, operator, value) and compared in Python:
never evaluated, never put into SQL. Standard library only.

Example:
    >>> runs = [{"run_id": "a", "name": "a", "status": "finished", "hyperparameters": {"lr": 0.1}},
    ...         {"run_id": "b", "name": "b", "status": "running", "hyperparameters": {"lr": 1e-4}}]
    >>> [r["run_id"] for r in query(runs, filters=["lr<1e-3"]).rows]
    ['b']
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from traindoctor.store.errors import StoreError

SEVERITIES = ("info", "warning", "critical")  # as traindoctor.diagnosis.finding (which this layer does not import)
# The diagnosis's rule ids (../shared/RULES.md; tests/store/test_catalog.py keeps this in step with
# traindoctor.diagnosis.engine.RULES), so that 'has:loss_spikes' is an error, not an empty listing.
RULE_IDS = (
    "adam_hyperparameters", "amp_skipped_steps", "bad_initial_loss", "best_epoch_not_last", "class_imbalance",
    "dead_layers", "decayed_too_early", "divergence", "eval_mode_during_training", "exploding_gradients",
    "loss_spike", "lr_too_high", "lr_too_low", "missing_warmup", "no_better_than_baseline", "overfitting",
    "train_longer", "train_mode_during_eval", "underfitting", "underperforming_classes",
    "update_ratio_out_of_band", "vanishing_gradients", "weight_decay_on_norm_and_bias",
)
OPERATORS = ("!=", "<=", ">=", "=", "<", ">", "~")
# Run fields every run has (in the order a table shows them), and aliases.
RUN_FIELDS = ("name", "run_id", "status", "steps", "num_steps", "started", "finished", "wall_time_s", "project")
ALIASES = {"last_step": "steps", "created_at": "started", "finished_at": "finished", "id": "run_id"}
# Hyperparameters worth a column when runs have them, most telling first.
KEY_HYPERPARAMETERS = ("lr", "learning_rate", "batch_size", "optimizer", "weight_decay", "epochs",
                       "model", "warmup_steps", "scheduler", "seed")
DEFAULT_SORT = "-started"

_FILTER = re.compile(r"^\s*(?P<key>[^\s=!<>~]+?)\s*(?P<op>!=|<=|>=|=|<|>|~)\s*(?P<value>.*?)\s*$")
_HAS = re.compile(r"^\s*has:(?P<word>[A-Za-z0-9_.\-]+)\s*$")


class FilterError(StoreError):
    """A filter or sort key that cannot be read, with a one-line reason."""


@dataclass(frozen=True)
class Filter:
    """One parsed filter: ``key op value``, or ``has:word`` (key ``has``)."""

    key: str
    op: str
    value: Any
    text: str


def parse_filter(text: str) -> Filter:
    """A :class:`Filter` from user text.

    Raises:
        FilterError: not ``KEY OP VALUE`` or ``has:WORD``.

    Example:
        >>> parse_filter("lr<1e-3")
        Filter(key='lr', op='<', value=0.001, text='lr<1e-3')
        >>> parse_filter("has:critical").op
        'has'
    """
    has = _HAS.match(text)
    if has:
        word = has["word"]
        if word not in SEVERITIES and word not in RULE_IDS:
            close = difflib.get_close_matches(word, (*SEVERITIES, *RULE_IDS), n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(f'has:{c}' for c in close)}?" if close else (
                "use has:critical, has:warning, has:info or has:RULE with a rule id (docs/rules.md)")
            raise FilterError(f"unknown finding {word!r} in filter {text!r}; {hint}")
        return Filter("has", "has", word, text)
    match = _FILTER.match(text)
    if not match or not match["key"]:
        raise FilterError(f"cannot read filter {text!r}: use KEY=VALUE, KEY<VALUE, KEY~TEXT, ... or has:critical")
    value = match["value"]
    # A typo that would match every run: no value ('batch_size>='; quote an empty text: name=''), or an
    # operator doubled ('lr<<3' compared "<3" as text, and every number sorts before '<').
    if not value:
        raise FilterError(f"filter {text!r} has no value: use KEY{match['op']}VALUE")
    if match["op"] != "~" and value[0] in "=<>!~":
        raise FilterError(f"cannot read filter {text!r}: one operator, then the value (quote a value "
                          f"that starts with {value[0]!r})")
    key, typed = ALIASES.get(match["key"], match["key"]), _typed(_unquoted(value))
    if key in TIME_FIELDS and isinstance(typed, str):
        typed = _time_value(key, match["op"], typed, text)
    return Filter(key, match["op"], typed, text)


# Fields that hold a time (Unix seconds): a filter may give them a date or time as the tables show it.
TIME_FIELDS = ("started", "finished")


def _time_value(key: str, op: str, value: str, text: str) -> float:
    """A date or time (ISO 8601: ``2026-11-30``, ``2026-11-30 08:41``, ``2026-11-30T08:41:05``;
    UTC unless it names its offset) as Unix seconds, for a ``started``/``finished`` filter.

    Raises:
        FilterError: ``value`` is not such a date, or the operator cannot compare times (``=``
            with a date would need the exact second; ``~`` reads text).
    """
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(f"cannot read {value!r} in filter {text!r}: {key} takes a date or time in UTC "
                          f"(2026-11-30, '2026-11-30 08:41') or Unix seconds") from None
    if op not in ("<", "<=", ">", ">="):
        raise FilterError(f"filter {text!r}: compare {key} with <, <=, > or >= (it is a time to the second)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _typed(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    number = _number(value)
    return value if number is None else number


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or numeric text (not a bool); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


# Run fields and the summary value each comes from.
_RUN_FIELDS: dict[str, str] = {
    "run_id": "run_id", "name": "name", "project": "project", "status": "status", "steps": "last_step",
    "num_steps": "num_steps", "started": "created_at", "finished": "finished_at", "wall_time_s": "wall_time_s",
}


class RunFields(Mapping[str, Any]):
    """A run's flat record (module doc), computed field by field on access.

    A query over 10,000 runs reads a handful of fields of each: building
    every field of every run (metrics, hyperparameters twice) would cost more
    than the query.
    """

    __slots__ = ("summary", "findings")

    def __init__(self, summary: dict[str, Any], findings: dict[str, Any] | None = None) -> None:
        self.summary = summary
        self.findings = findings

    def __getitem__(self, key: str) -> Any:
        summary = self.summary
        source = _RUN_FIELDS.get(key)
        if source is not None:
            return summary.get(source)
        if key == "diagnosed":
            return self.findings is not None
        if key in SEVERITIES:
            if self.findings is None:
                raise KeyError(key)
            return int((self.findings.get("counts") or {}).get(key) or 0)
        hyperparameters = summary.get("hyperparameters") or {}
        if key in hyperparameters:
            return hyperparameters[key]
        if key.startswith("config.") and key[7:] in hyperparameters:
            return hyperparameters[key[7:]]
        best = key.startswith("best.")
        split, _, name = (key[5:] if best else key).partition(".")
        values = ((summary.get("metrics") or {}).get(split) or {}).get(name)
        if values is None:
            raise KeyError(key)
        return values.get("best" if best else "last")

    def __iter__(self):
        yield from _RUN_FIELDS
        yield "diagnosed"
        if self.findings is not None:
            yield from SEVERITIES
        for split, names in (self.summary.get("metrics") or {}).items():
            for name in names:
                yield f"{split}.{name}"
                yield f"best.{split}.{name}"
        for key in self.summary.get("hyperparameters") or {}:
            yield key
            yield f"config.{key}"

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True


def run_fields(summary: dict[str, Any], findings: dict[str, Any] | None = None) -> RunFields:
    """A run's flat record (module doc) from its catalog summary (or listing row)
    and its current findings entry (``{"counts", "rules"}``; None when undiagnosed)."""
    return RunFields(summary, findings)


def matches(fields: dict[str, Any], condition: Filter, rules: Iterable[str] = ()) -> bool:
    """Whether a run's fields (and its cached finding rules) satisfy one filter."""
    if condition.op == "has":
        if not fields.get("diagnosed"):
            return False
        word = condition.value
        if word in SEVERITIES:
            at_or_above = SEVERITIES[SEVERITIES.index(word):]
            return any(fields.get(severity, 0) > 0 for severity in at_or_above)
        return word in set(rules)
    actual = fields.get(condition.key)
    if actual is None:
        return False
    wanted, op = condition.value, condition.op
    if op == "~":
        return str(wanted).lower() in _text(actual).lower()
    if isinstance(wanted, bool):
        if op not in ("=", "!="):
            return False
        equal = actual is wanted or _text(actual).lower() == _text(wanted)
        return equal == (op == "=")
    number, wanted_number = _number(actual), _number(wanted)
    if wanted_number is not None:
        if number is None:
            return False
        if math.isnan(wanted_number):
            # NaN equals nothing, itself included: 'train.loss=nan' (a diverged run's last loss) and
            # 'name=nan' matched no run at all.
            return op in ("=", "!=") and math.isnan(number) == (op == "=")
        return _compare(number, op, wanted_number)
    if number is not None and not isinstance(actual, str) and op in ("<", "<=", ">", ">="):
        # 'val.loss>abc' compared the text 'nan' with 'abc' and matched a diverged run.
        raise FilterError(f"filter {condition.text!r}: {condition.key} holds numbers; compare it with a number")
    return _compare(_text(actual), op, str(wanted))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    if op == "=":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    if op == "<":
        return actual < wanted
    if op == "<=":
        return actual <= wanted
    if op == ">":
        return actual > wanted
    return actual >= wanted


def sort_key(key: str) -> tuple[str, bool]:
    """(field, descending) from ``KEY`` or ``-KEY``."""
    key = key.strip()
    descending = key.startswith("-")
    key = key.lstrip("-+").strip()
    if not key:
        raise FilterError("empty sort key: use --sort KEY, or --sort -KEY for descending")
    return ALIASES.get(key, key), descending


def _ordering(rows: list[Mapping[str, Any]], key: str, descending: bool) -> list[Mapping[str, Any]]:
    """Rows ordered by one field: numbers before text, missing values last in both directions."""
    numbers, texts, missing = [], [], []
    for row in rows:
        value = row.get(key)
        if value is None:
            missing.append(row)
            continue
        number = _number(value)
        if number is not None and number == number:
            numbers.append((number, row))
        else:
            texts.append((_text(value).lower(), row))
    numbers.sort(key=lambda pair: pair[0], reverse=descending)
    texts.sort(key=lambda pair: pair[0], reverse=descending)
    return [row for _, row in numbers] + [row for _, row in texts] + missing


@dataclass
class Selection:
    """The runs a query selected, in order, as flat records, and how many matched before the limit."""

    rows: list[Mapping[str, Any]]
    matched: int
    total: int
    undiagnosed: int


def query(
    summaries: Sequence[dict[str, Any]],
    *,
    filters: Sequence[str | Filter] = (),
    sort: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    findings: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
) -> Selection:
    """The summaries' flat records that pass every filter, sorted, one page of them, with the counts a
    page footer shows.

    Args:
        summaries: catalog summaries.
        filters: filter texts or parsed filters, all of which must hold.
        sort: ``KEY`` (ascending) or ``-KEY``; default newest first.
        limit, offset: the page.
        findings: the current findings entry of a summary (None when
            undiagnosed); default: none is.

    Raises:
        FilterError: a filter cannot be read, or names a field no run has.
    """
    conditions = [item if isinstance(item, Filter) else parse_filter(item) for item in filters]
    records = []
    undiagnosed = 0
    for summary in summaries:
        found = findings(summary) if findings is not None else None
        undiagnosed += found is None
        fields = run_fields(summary, found)
        records.append((fields, (found or {}).get("rules") or ()))
    if records:
        for condition in conditions:
            if condition.op != "has" and not any(condition.key in fields for fields, _ in records):
                known = set().union(*(fields for fields, _ in records[-100:]))
                raise FilterError(f"no run has a field {condition.key!r} (filter {condition.text!r}); "
                                  f"fields include {', '.join(sorted(_suggestions(condition.key, known)))}")
    rows = [fields for fields, rules in records if all(matches(fields, c, rules) for c in conditions)]
    key, descending = sort_key(sort or DEFAULT_SORT)
    if rows and not any(key in row for row in rows):
        raise FilterError(f"no run has a field {key!r} to sort by")
    rows = _ordering(rows, key, descending)
    matched = len(rows)
    page = rows[offset:] if limit is None else rows[offset:offset + max(0, int(limit))]
    return Selection(rows=page, matched=matched, total=len(records), undiagnosed=undiagnosed)


def _suggestions(key: str, known: set[str]) -> list[str]:
    close = [name for name in known if key.lower() in name.lower() or name.lower() in key.lower()]
    return (close or [name for name in RUN_FIELDS if name in known])[:8]


def key_hyperparameters(hyperparameters: Iterable[dict[str, Any]], limit: int = 4) -> list[str]:
    """Hyperparameter columns worth showing for runs with these (flattened)
    hyperparameters: known important keys first, then keys whose values differ.

    Example:
        >>> key_hyperparameters([{"lr": 0.1, "seed": 1, "depth": 2}, {"lr": 0.2, "seed": 1, "depth": 3}])
        ['lr', 'seed', 'depth']
    """
    values: dict[str, set[str]] = {}
    for run in hyperparameters:
        for key, value in run.items():
            values.setdefault(key, set()).add(_text(value))
    chosen = [key for key in KEY_HYPERPARAMETERS if key in values]
    varying = [key for key in sorted(values) if key not in chosen and len(values[key]) > 1]
    return (chosen + varying)[:limit]
