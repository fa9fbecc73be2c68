"""Per-class rules from the stored confusion counts (precision, recall and F1 derived here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traindoctor.diagnosis.common import EVAL_SPLITS, finding
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.records import Evidence, rule
from traindoctor.store.frames import to_float
from traindoctor.store.run_data import RunData

# A class needs this many evaluation samples before its recall means much.
MIN_CLASS_SUPPORT = 5
# Two flagged classes that are each other's most frequent confusion, with
# the errors of each going to the other at least half the time, overlap in
# the data (or in their labels): no training change separates them, so the
# finding is a hint about the data (info), not a warning about the run. A
# GRU telling noisy sine from triangle waves (sine recall 0.57, triangle
# 0.81, each mostly taken for the other; the other classes 0.98) is such a
# pair, and so are two Gaussian blobs sharing a centre. Rare or
# mislabelled classes are taken for a big class that is not taken for them.
MUTUAL_CONFUSION_SHARE = 0.5
# "Far below the rest": F1 at least 0.15 below the median F1 of the other
# classes and below 80 % of it (0.15 is three times the binomial standard
# error of a recall near 0.8 with 60 samples)... The median is weighted by
# support: the F1 a typical evaluation example of the other classes gets.
# With equal supports it is the plain median; on imbalanced data the plain
# median of the others is a small class's F1 when most classes are small
# and all of them do poorly (a BN MLP at 219:1 whose four small classes had
# recall 0.46-0.57 against 0.98: each was within 0.06 of the plain median).
UNDERPERFORMING_F1_GAP = 0.15
UNDERPERFORMING_F1_RELATIVE = 0.8
# ...the others doing decently (median F1 ≥ 0.5; when the whole model is
# poor, the curve rules speak, not this one)...
UNDERPERFORMING_MIN_REFERENCE = 0.5
# ...and the gap larger than this many binomial standard errors of the
# class's recall, so small classes are not flagged on noise.
UNDERPERFORMING_SE = 2.0
# A warning only when a flagged class is largely missed: its F1 below half
# the others' (the model gets fewer than half as many of its examples
# right as it does elsewhere, the mark of a class starved of examples or
# mislabelled, which data work fixes). Between half and UNDERPERFORMING_F1_RELATIVE
# a class is harder than the rest, which healthy runs show as often as
# faulty ones: held out, 5 of the 8 warnings on healthy runs of the seven
# program hold-outs and 5 of 7 on 216 re-seeded healthy corpus runs were
# this rule on a healthy run's hardest class; on the hold-outs those sat at
# 0.59-0.79 of the others' F1 (a Mixer's, an FT-Transformer's, a distilled
# student's), while the labelled cases it warned on sat at 0-0.41 but for
# two (0.56, 0.68; both labelled class_imbalance too). A harder class is
# info: true, worth a look at the confusions, not the run's trouble.
UNDERPERFORMING_F1_MISSED = 0.5
# "Strongly unequal support": largest/smallest class support ≥ 6. It was 4
# (a 80/20 split in the binary case; imbalanced-learn's tutorials start
# there); the accuracy benchmark's leave-one-family-out tuning chose 6 on
# every one of its 18 folds, the fold that holds out the BN tabular family
# included (35/25/20/12/8 % classes, 4.4:1, whose healthy runs 4 warned
# on), so the cross-validated value is the default (docs/accuracy.md).
IMBALANCE_RATIO = 6.0
# A class is "small" when its support is below a third of the largest.
SMALL_CLASS_FRACTION = 1.0 / 3.0
# Small classes "doing worst": their mean recall at least 0.1 below the big ones'.
SMALL_CLASS_RECALL_GAP = 0.1


@dataclass
class ClassMetrics:
    """Per-class metrics derived from one confusion matrix (rows: true class, columns: predicted)."""

    counts: np.ndarray
    support: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


def class_metrics(counts: np.ndarray) -> ClassMetrics:
    """Precision, recall and F1 per class from confusion counts (0 where undefined, like sklearn's zero_division=0)."""
    counts = np.asarray(counts, dtype="float64")
    true_positive = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return ClassMetrics(counts, support, precision, recall, f1)


@per_run
def last_confusion(run: RunData) -> tuple[np.ndarray, int, str] | None:
    """The confusion matrix of the last evaluation (val, else test, else train), its step and split.

    Returns:
        None without confusion counts; else (counts, step, split): counts of shape (C, C), float64, rows the
        true class and columns the predicted one (C: the largest class index + 1, at least ``task.num_classes``);
        step in optimizer steps.
    """
    confusion = run.confusion
    if confusion is None or confusion.empty:
        return None
    for split in EVAL_SPLITS + ("train",):
        rows = confusion[np.asarray(confusion["split"] == split, dtype=bool)]
        if rows.empty:
            continue
        steps = to_float(rows["step"])
        step = int(np.nanmax(steps))
        return _matrix(run, rows[steps == step]), step, split
    return None


def _matrix(run: RunData, rows) -> np.ndarray:
    """The (C, C) float64 counts of one evaluation's confusion rows (C: the largest class index + 1, at least
    ``task.num_classes``)."""
    true_class, pred_class = to_float(rows["true_class"]), to_float(rows["pred_class"])
    size = max(int(max(np.nanmax(true_class), np.nanmax(pred_class))) + 1, int(run.task.get("num_classes") or 0))
    matrix = np.zeros((size, size), dtype="float64")
    np.add.at(matrix, (true_class.astype(int), pred_class.astype(int)), to_float(rows["count"]))
    return matrix


def previous_confusion(run: RunData, split: str, step: int) -> np.ndarray | None:
    """The confusion counts of the evaluation on ``split`` before the one at ``step`` (optimizer steps), shaped as
    :func:`last_confusion`'s; None when there is none."""
    confusion = run.confusion
    rows = confusion[np.asarray(confusion["split"] == split, dtype=bool)]
    steps = to_float(rows["step"])
    earlier = steps[steps < step]
    return _matrix(run, rows[steps == np.nanmax(earlier)]) if len(earlier) else None


def _largely_missed(metrics: ClassMetrics, index: int, present: np.ndarray) -> bool:
    """Class ``index``'s F1 below UNDERPERFORMING_F1_MISSED of the support-weighted median F1 of the other
    ``present`` classes."""
    others = [j for j in present if j != index]
    reference = _weighted_median(metrics.f1[others], metrics.support[others])
    return bool(metrics.f1[index] < UNDERPERFORMING_F1_MISSED * reference)


def _class_name(run: RunData, index: int) -> str:
    names = run.task.get("class_names") or []
    return str(names[index]) if index < len(names) else str(index)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The support-weighted median: the value a typical evaluation example of these classes gets.

    Each sorted value sits at the middle of its weight's share of the total; the median is interpolated
    at 0.5 between them, so equal weights give exactly the plain median (the mean of the two middle
    values for an even count) and nearly equal ones nearly it.
    """
    order = np.argsort(values)
    ordered, share = values[order], weights[order] / weights.sum()
    return float(np.interp(0.5, np.cumsum(share) - share / 2, ordered))


def _mutual_pairs(metrics: ClassMetrics, flagged: list[int]) -> bool:
    """Whether every flagged class pairs with another flagged class as mutual confusions: each one's most
    frequent wrong prediction is the other, taking ≥ MUTUAL_CONFUSION_SHARE of its errors."""
    def partner(index: int) -> int | None:
        row = metrics.counts[index].copy()
        row[index] = 0
        if row.sum() <= 0:
            return None
        other = int(np.argmax(row))
        return other if row[other] >= MUTUAL_CONFUSION_SHARE * row.sum() else None

    return all(partner(index) in flagged and partner(partner(index)) == index for index in flagged)


def _far_below(f1: float, recall: float, support: float, reference: float) -> bool:
    """An F1 far below the others' (``reference``): ≥ UNDERPERFORMING_F1_GAP below it and under
    UNDERPERFORMING_F1_RELATIVE of it, the others doing decently, and the gap beyond UNDERPERFORMING_SE binomial
    standard errors of a recall measured on ``support`` examples."""
    standard_error = np.sqrt(max(recall * (1 - recall), 0.25 / support) / support)
    gap = reference - f1
    return bool(reference >= UNDERPERFORMING_MIN_REFERENCE and gap >= UNDERPERFORMING_F1_GAP
                and f1 < UNDERPERFORMING_F1_RELATIVE * reference and gap > UNDERPERFORMING_SE * standard_error)


def _small_classes(metrics: ClassMetrics, present: np.ndarray) -> dict | None:
    """The classes with 1 to MIN_CLASS_SUPPORT − 1 evaluation examples, judged together when they hold
    MIN_CLASS_SUPPORT or more in all: their pooled F1 (from their summed true positives, false positives and
    support) far below the support-weighted median F1 of the classes with enough examples each
    (:func:`_far_below`). None when there are no such classes, too few examples among them, or they are not
    far below. One rare class's 2 examples say little; four rare classes with 0 of 8 right say as much as one
    class of 8."""
    small = np.flatnonzero((metrics.support > 0) & (metrics.support < MIN_CLASS_SUPPORT))
    support = float(metrics.support[small].sum())
    if not len(small) or support < MIN_CLASS_SUPPORT:
        return None
    true_positive = float(metrics.counts[small, small].sum())
    predicted = float(metrics.counts[:, small].sum())
    precision = true_positive / predicted if predicted > 0 else 0.0
    recall = true_positive / support
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    reference = _weighted_median(metrics.f1[present], metrics.support[present])
    if not _far_below(f1, recall, support, reference):
        return None
    return {"classes": [int(index) for index in small], "f1": f1, "precision": precision, "recall": recall,
            "support": int(support), "others_median_f1": reference}


def _top_confusion(metrics: ClassMetrics, index: int) -> tuple[int, float] | None:
    row = metrics.counts[index].copy()
    row[index] = 0
    if row.sum() <= 0:
        return None
    other = int(np.argmax(row))
    return other, float(row[other] / max(metrics.support[index], 1))


@rule(severities=("info", "warning"), inputs=("confusion",), metadata=("task.num_classes", "task.class_names"),
      evidence=Evidence.series("loss"), classes_page=True,
      # A model no better than the class prior does poorly on most classes: that is the finding.
      explained_by=("no_better_than_baseline", "divergence"),
      thresholds=("MIN_CLASS_SUPPORT", "UNDERPERFORMING_F1_GAP", "UNDERPERFORMING_F1_RELATIVE",
                  "UNDERPERFORMING_MIN_REFERENCE", "UNDERPERFORMING_SE", "UNDERPERFORMING_F1_MISSED",
                  "MUTUAL_CONFUSION_SHARE"))
def underperforming_classes(run: RunData) -> list[Finding]:
    """Classes whose F1 is far below the rest, with what they are confused with.

    Symptom: in the last evaluation, a class's F1 is ≥ 0.15 below (and
    < 80 % of) the median F1 of the other classes (weighted by their
    support), by more than two binomial
    standard errors. Classes with fewer than 5 evaluation examples each are
    judged together the same way (their pooled F1) when they hold ≥ 5 in
    all. A warning when a flagged class is largely missed (F1
    below half the others'); info when every flagged class keeps over half
    (a class harder than the rest, as healthy runs have), or when they pair
    up as each other's main confusion (≥ half of each one's errors): classes
    that overlap in the data, which no training change separates; info too
    when a class is largely missed at the last evaluation only (at the one
    before, on the same split, its F1 was ≥ 0.15 higher and not largely
    missed: where an oscillating model happened to be, not a class it
    cannot learn).
    Likely cause: too few or mislabelled examples, classes that overlap or
    need features the model lacks.
    Try: look at the confusions and the misclassified examples; curate or
    relabel data for those classes; collect more of them.
    Source: seed 002 (data curation, "plot a confusion matrix").
    """
    latest = last_confusion(run)
    if latest is None:
        return []
    matrix, step, split = latest
    metrics = class_metrics(matrix)
    present = np.flatnonzero(metrics.support >= MIN_CLASS_SUPPORT)
    if len(present) < 2:
        return []
    flagged = []
    for index in present:
        others = [j for j in present if j != index]
        reference = _weighted_median(metrics.f1[others], metrics.support[others])
        if _far_below(metrics.f1[index], metrics.recall[index], metrics.support[index], reference):
            flagged.append((int(index), reference))
    small = _small_classes(metrics, present)
    if not flagged and small is None:
        return []
    missed_small = small is not None and small["f1"] < UNDERPERFORMING_F1_MISSED * small["others_median_f1"]
    missed_now = [index for index, reference in flagged
                  if metrics.f1[index] < UNDERPERFORMING_F1_MISSED * reference]
    # A class missed at the last evaluation only is the model's state at that moment (a constant lr that
    # oscillates: a healthy ViT re-seeded with seed 26 took class 6 for class 4 at its last eval only), not a
    # class it cannot learn: it warns unless the evaluation before, where there is one, did clearly better on it.
    before = previous_confusion(run, split, step)
    transient = []
    if before is not None and before.shape == matrix.shape:
        earlier = class_metrics(before)
        shared = np.flatnonzero((earlier.support >= MIN_CLASS_SUPPORT) & (metrics.support >= MIN_CLASS_SUPPORT))
        # Transient: the class did clearly better then (its F1 UNDERPERFORMING_F1_GAP higher) and was not largely
        # missed among the others; an early evaluation where every class was weak clears no class.
        transient = [index for index in missed_now if index in shared
                     and earlier.f1[index] - metrics.f1[index] >= UNDERPERFORMING_F1_GAP
                     and not _largely_missed(earlier, index, shared)]
    missed_flagged = len(missed_now) > len(transient)
    missed = missed_small or missed_flagged
    count = len(flagged) + (len(small["classes"]) if small is not None else 0)
    parts, evidence = [], {}
    for index, reference in flagged:
        name = _class_name(run, index)
        confused = _top_confusion(metrics, index)
        confusion_text = (f", most often predicted as {_class_name(run, confused[0])} ({confused[1]:.0%})"
                          if confused else "")
        parts.append(f"class {name}: F1 {metrics.f1[index]:.2f}, recall {metrics.recall[index]:.2f} "
                     f"(others' support-weighted median F1 {reference:.2f}, support {int(metrics.support[index])}){confusion_text}")
        evidence[name] = {"f1": metrics.f1[index], "precision": metrics.precision[index],
                          "recall": metrics.recall[index], "support": int(metrics.support[index]),
                          "others_median_f1": reference,
                          "confused_with": _class_name(run, confused[0]) if confused else None}
    if small is not None:
        each = []
        for index in small["classes"]:
            right, support = int(metrics.counts[index, index]), int(metrics.support[index])
            confused = _top_confusion(metrics, index) if right < support else None
            each.append(f"{_class_name(run, index)}: {right}/{support} right"
                        + (f", mostly taken for {_class_name(run, confused[0])}" if confused else ""))
        parts.append(f"the {len(small['classes'])} classes with under {MIN_CLASS_SUPPORT} examples each ("
                     + "; ".join(each) + f"), together: F1 {small['f1']:.2f}, recall {small['recall']:.2f} "
                     f"(others' support-weighted median F1 {small['others_median_f1']:.2f}, "
                     f"support {small['support']} in all)")
    overlapping = bool(flagged) and _mutual_pairs(metrics, [index for index, _ in flagged])
    overlap_text = (" Each is mostly taken for the other: the classes overlap in the data (or in their labels), "
                    "which no training change separates." if overlapping else "")
    harder_text = ("" if missed or overlapping or transient else
                   " Each still gets at least half the others' F1: harder than the rest, which healthy runs "
                   "have too, rather than missed by the model.")
    transient_names = [_class_name(run, index) for index in transient]
    if transient and not missed:
        harder_text = (f" Largely missed at this evaluation only: the one before did better on "
                       f"{', '.join(transient_names)}, so this is where the model happened to be (an lr that makes "
                       f"it oscillate can do this), not a class it cannot learn.")
    return [finding(
        # Classes that overlap each other are a hint however low; pooled small classes never pair up.
        "underperforming_classes", "warning" if missed_small or (missed_flagged and not overlapping) else "info",
        (f"{count} classes " if count > 1 else "1 class ") + ("far below the rest" if missed else "below the rest")
        + (", confused with each other" if overlapping else ""),
        f"In the {split} evaluation at step {step}: " + "; ".join(parts) + "." + overlap_text + harder_text,
        "Plot the confusion matrix and inspect the misclassified examples of these classes; curate or relabel "
        "their data, collect more of them, or add features that separate them from what they are confused with.",
        "seed 002 (data curation; plot a confusion matrix)", step, step,
        {"split": split, "classes": evidence, "missed_at_the_last_evaluation_only": transient_names,
         "mutual_confusion": overlapping,
         "small_classes": {**small, "classes": [_class_name(run, index) for index in small["classes"]]}
         if small is not None else None})]


@rule(severities=("warning",), inputs=("confusion",), metadata=("task.num_classes", "task.class_names"),
      evidence=Evidence.series("loss"), classes_page=True,
      thresholds=("IMBALANCE_RATIO", "SMALL_CLASS_FRACTION", "SMALL_CLASS_RECALL_GAP"))
def class_imbalance(run: RunData) -> list[Finding]:
    """Strongly unequal class support, with the small classes doing worst.

    Symptom: largest/smallest class support ≥ 6 in the evaluation set and the
    small classes' mean recall ≥ 0.1 below the large classes'.
    Likely cause: the model learns the prior; few gradients come from rare classes.
    Try: oversampling (WeightedRandomSampler), class-weighted loss, focal loss;
    report per-class metrics or macro-F1 rather than accuracy.
    Source: seed 002 (handling imbalanced data).
    """
    latest = last_confusion(run)
    if latest is None:
        return []
    matrix, step, split = latest
    metrics = class_metrics(matrix)
    present = np.flatnonzero(metrics.support > 0)
    if len(present) < 2:
        return []
    support = metrics.support[present]
    ratio = float(support.max() / support.min())
    if ratio < IMBALANCE_RATIO:
        return []
    small = present[support < SMALL_CLASS_FRACTION * support.max()]
    large = present[support >= SMALL_CLASS_FRACTION * support.max()]
    if len(small) == 0 or len(large) == 0:
        return []
    small_recall = float(metrics.recall[small].mean())
    large_recall = float(metrics.recall[large].mean())
    if large_recall - small_recall < SMALL_CLASS_RECALL_GAP:
        return []
    names = [_class_name(run, int(i)) for i in small]
    return [finding(
        "class_imbalance", "warning", "Imbalanced classes: the small ones do worst",
        f"Class support ranges {int(support.min())}–{int(support.max())} ({ratio:.0f}:1) in the {split} set at step "
        f"{step}; small classes ({', '.join(names)}) have mean recall {small_recall:.2f} vs {large_recall:.2f} "
        "for the others.",
        "Oversample the small classes (WeightedRandomSampler), weight the loss by inverse class frequency, or use "
        "focal loss; judge with macro-F1 or per-class recall rather than accuracy.",
        "seed 002 (imbalanced data)", step, step,
        {"support": {_class_name(run, int(i)): int(metrics.support[i]) for i in present}, "ratio": ratio,
         "small_classes": names, "small_recall": small_recall, "large_recall": large_recall})]
