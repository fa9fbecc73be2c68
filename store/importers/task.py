"""What an imported run's loss measures (run.json's ``task``), from what its source says.

The probe records ``task.kind`` from ``Probe(task=, num_classes=, vocab_size=)``;
an import stores the same fields (:data:`traindoctor.store.format.TASK_KINDS`):
``kind``, ``num_classes`` and ``class_names`` for a classifier, ``vocab_size``
for a language model. They come from, in this order of precedence:

1. ``traindoctor import ... --task classification:10 | lm:50257 | regression | unknown``
   (and ``--num-classes N``, the same as ``--task classification:N``);
2. the source's own description of the model: an HF ``config.json``
   (:func:`task_from_model_config`) or a Lightning ``hparams.yaml``
   (:func:`task_from_hparams`);
3. nothing: no ``task``, which the rules read as unknown, so no rule judges
   the run's loss level.

Only what the source states is used; a task is never guessed from the loss
values (a first loss near ln 10 does not make a run a 10-class classifier).
"""

from __future__ import annotations

import math
from typing import Any

from traindoctor.store.errors import StoreError
from traindoctor.store.format import TASK_KINDS

__all__ = ["merge_task", "parse_task_option", "task_from_hparams", "task_from_model_config"]

# Spellings --task accepts for each kind ("lm" is what people type).
_KIND_NAMES = {
    "classification": "classification", "classifier": "classification",
    "lm": "language_modelling", "language_modelling": "language_modelling", "language_modeling": "language_modelling",
    "language-modelling": "language_modelling", "language-modeling": "language_modelling",
    "regression": "regression", "unknown": "unknown",
}
# HF model-class suffixes (config.json "architectures") whose loss is a token
# cross-entropy over the vocabulary (transformers' AutoModelForCausalLM,
# AutoModelForMaskedLM, AutoModelForSeq2SeqLM and the GPT-2 style *LMHeadModel
# heads; *ForConditionalGeneration is the class name of T5, BART, Whisper and
# most encoder-decoder and vision-language models: a token cross-entropy too).
_LANGUAGE_MODEL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForSeq2SeqLM", "ForConditionalGeneration")
# Heads whose loss is a cross-entropy over classes (AutoModelFor*Classification).
_CLASSIFIER_SUFFIXES = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification",
                        "ForTokenClassification", "ForVideoClassification")
# Lightning hparams keys people use for the number of classes / the vocabulary
# (torchmetrics' num_classes, HF's num_labels, nanoGPT's and GPT-2's vocab_size / n_vocab).
_CLASS_KEYS = ("num_classes", "n_classes", "num_labels", "n_labels", "classes")
_VOCAB_KEYS = ("vocab_size", "n_vocab", "num_tokens", "vocabulary_size")


def _size(value: Any) -> int | None:
    """A class count or vocabulary size: a whole number >= 2, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 2 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 2:
        return int(value)
    return None


def parse_task_option(text: str) -> dict[str, Any]:
    """``--task``'s value as run.json's task.

    ``classification``, ``classification:C``, ``lm``, ``lm:V`` (or
    ``language_modelling:V``), ``regression`` or ``unknown``; C and V are
    whole numbers >= 2.

    Raises:
        StoreError: anything else, with a one-line reason.

    Example:
        >>> parse_task_option("lm:50257")
        {'kind': 'language_modelling', 'vocab_size': 50257}
    """
    name, _, size_text = str(text).strip().partition(":")
    kind = _KIND_NAMES.get(name.strip().lower())
    if kind is None:
        raise StoreError(f"--task {text!r}: use classification[:C], lm[:V], regression or unknown")
    task: dict[str, Any] = {"kind": kind}
    if not size_text:
        return task
    if kind not in ("classification", "language_modelling"):
        raise StoreError(f"--task {text!r}: only classification:C and lm:V take a size")
    try:
        size = int(size_text.strip())
    except ValueError:
        size = 0
    if size < 2:
        raise StoreError(f"--task {text!r}: the {'class count' if kind == 'classification' else 'vocabulary size'} "
                         f"must be a whole number >= 2")
    task["num_classes" if kind == "classification" else "vocab_size"] = size
    return task


def task_from_model_config(model_config: dict[str, Any], classes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task an HF model's ``config.json`` states, or {} when it states none.

    Args:
        model_config: the parsed config.json (or a config that holds one).
        classes: ``num_classes`` and ``class_names`` already read from its
            ``id2label`` (:func:`traindoctor.store.importers.hf.model_meta`
            validates them), or None.

    ``problem_type`` wins where given (transformers sets it on the config):
    ``regression``, ``single_label_classification``, and
    ``multi_label_classification`` (a sum of per-label binary cross-entropies,
    whose scale is not ln C: kind ``unknown``). Otherwise the head's class name
    decides: a language-model head gives ``language_modelling`` with
    ``vocab_size``; a classification head gives ``classification`` with the
    classes of ``id2label``, except that a single label means regression
    (transformers' rule for ``num_labels == 1``).
    """
    architectures = [str(name) for name in model_config.get("architectures") or [] if isinstance(name, str)]
    classes = classes or {}
    problem = model_config.get("problem_type")
    is_classifier = any(name.endswith(_CLASSIFIER_SUFFIXES) for name in architectures)
    if problem == "regression":
        return {"kind": "regression"}
    if problem == "multi_label_classification":
        return {"kind": "unknown"}
    if problem == "single_label_classification" or is_classifier:
        labels = model_config.get("id2label")
        if isinstance(labels, dict) and len(labels) == 1 and problem is None:
            return {"kind": "regression"}
        return {"kind": "classification", **classes}
    if any(name.endswith(_LANGUAGE_MODEL_SUFFIXES) for name in architectures):
        vocab = _size(model_config.get("vocab_size"))
        return {"kind": "language_modelling", **({"vocab_size": vocab} if vocab else {})}
    return {}


def _find(hparams: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` holding a size, at the top level or one mapping down (``model: {num_classes: 10}``)."""
    levels = [hparams] + [value for value in hparams.values() if isinstance(value, dict)]
    for level in levels:
        for key in keys:
            size = _size(level.get(key))
            if size is not None:
                return size
    return None


def task_from_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The task a Lightning ``hparams.yaml`` states (``num_classes``, ``vocab_size`` …), or {}.

    A class count wins over a vocabulary size: a text classifier names both,
    and its loss is a cross-entropy over the classes.
    """
    if not isinstance(hparams, dict):
        return {}
    classes = _find(hparams, _CLASS_KEYS)
    if classes is not None:
        return {"kind": "classification", "num_classes": classes}
    vocab = _find(hparams, _VOCAB_KEYS)
    if vocab is not None:
        return {"kind": "language_modelling", "vocab_size": vocab}
    return {}


def merge_task(found: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """The source's task with what the user gave (``--task``, ``--num-classes``) on top.

    A given kind replaces the source's; the source's class names or
    vocabulary are kept only when they belong to that kind and the user gave
    no size of their own.
    """
    if not given:
        return dict(found)
    kind = given.get("kind", found.get("kind"))
    if kind not in TASK_KINDS:
        kind = "classification" if given.get("num_classes") else found.get("kind")
    merged: dict[str, Any] = {"kind": kind} if kind else {}
    keep = {"classification": ("num_classes", "class_names"), "language_modelling": ("vocab_size",)}.get(kind, ())
    for key in keep:
        if key in found:
            merged[key] = found[key]
    for key, value in given.items():
        if key != "kind":
            merged[key] = value
    names = merged.get("class_names")
    if names is not None and len(names) != merged.get("num_classes"):
        merged.pop("class_names")  # the user's count and the source's names disagree: the count is what was said
    return merged
