"""Other tools' metric names map onto the data contract's (split, name, layer)."""

from __future__ import annotations

import pytest

from traindoctor.store.importers.names import EPOCH, MetricKey, map_metric, map_metrics, optimizer_from_tags

CASES = [
    ("train/loss", ("train", "loss", None)),
    ("loss", ("train", "loss", None)),
    ("train_loss", ("train", "loss", None)),
    ("val_loss", ("val", "loss", None)),
    ("val/loss", ("val", "loss", None)),
    ("eval/loss", ("val", "loss", None)),
    ("eval_loss", ("val", "loss", None)),
    ("Loss/train", ("train", "loss", None)),
    ("Accuracy/test", ("test", "accuracy", None)),
    ("lr", ("train", "lr", "group0")),
    ("learning_rate", ("train", "lr", "group0")),
    ("train/learning_rate", ("train", "lr", "group0")),
    ("lr-Adam", ("train", "lr", "group0")),
    ("lr-SGD/pg1", ("train", "lr", "group0")),
    ("lr-SGD/pg3", ("train", "lr", "group2")),
    ("lr-AdamW-momentum", ("train", "momentum", "group0")),
    ("grad_norm", ("train", "grad_norm", None)),
    ("train/grad_norm", ("train", "grad_norm", None)),
    ("grad_2.0_norm_total", ("train", "grad_norm", None)),
    ("grad_2.0_norm/fc.weight", ("train", "grad_norm", "fc.weight")),
    ("grad_1.0_norm_total", ("train", "grad_1.0_norm_total", None)),
    ("accuracy", ("train", "accuracy", None)),
    ("val_acc", ("val", "accuracy", None)),
    ("Vali_Loss", ("val", "loss", None)),  # Time-Series-Library's "Vali Loss:" as the log importer keys it
    ("vali_loss", ("val", "loss", None)),
    ("val/accuracy", ("val", "accuracy", None)),
    ("eval_accuracy", ("val", "accuracy", None)),
    ("test_acc", ("test", "accuracy", None)),
    ("train_loss_step", ("train", "loss", None)),
    ("total_loss", ("train", "loss", None)),
    ("losses", ("train", "loss", None)),
    ("val_total_loss", ("val", "loss", None)),
    ("train_loss_epoch", ("train", "loss_epoch", None)),
    ("val_loss_epoch", ("val", "loss", None)),
    ("val_loss_step", ("val", "loss_step", None)),
    ("eval_runtime", ("val", "runtime", None)),
    ("perplexity", ("user", "perplexity", None)),
    ("val/perplexity", ("val", "perplexity", None)),
    ("time_per_step", ("user", "time_per_step", None)),
    ("hp_metric", ("user", "hp_metric", None)),
]


@pytest.mark.parametrize(("tag", "expected"), CASES, ids=[c[0] for c in CASES])
def test_map_metric(tag, expected):
    assert map_metric(tag) == MetricKey(*expected)


@pytest.mark.parametrize("tag", ["epoch", "train/epoch", "Epoch"])
def test_epoch_tag_is_the_epoch_column(tag):
    assert map_metric(tag) is EPOCH


def test_a_plain_loss_keeps_the_loss_next_to_total_loss():
    """Detectron2-style logs print total_loss; when a plain loss is there too, that one is the loss."""
    mapping = map_metrics(["loss", "total_loss"])
    assert mapping["loss"] == MetricKey("train", "loss") and mapping["total_loss"] == MetricKey("train", "total_loss")


def test_two_tags_for_one_key_stay_two_series():
    mapping = map_metrics(["loss", "train/loss", "val_loss"])
    assert len(set(mapping.values())) == 3
    assert mapping["loss"] == MetricKey("train", "loss")
    assert mapping["train/loss"] == MetricKey("train", "train/loss")


@pytest.mark.parametrize(("tags", "expected"), [
    (["lr-AdamW", "train_loss"], "AdamW"),
    (["lr-SGD/pg1", "lr-SGD/pg2"], "SGD"),
    (["learning_rate"], None),
], ids=["single-group", "two-groups", "no-monitor"])
def test_optimizer_from_lightning_lr_tags(tags, expected):
    assert optimizer_from_tags(tags) == expected


NAMED_EVAL_SETS = {
    "hf-eval-dataset-dict": (["loss", "eval_g0_loss", "eval_g0_runtime", "eval_ood_set_loss", "eval_ood_set_accuracy"],
                             {"eval_g0_loss": ("val_g0", "loss", None), "eval_g0_runtime": ("val_g0", "runtime", None),
                              "eval_ood_set_loss": ("val_ood_set", "loss", None),
                              "eval_ood_set_accuracy": ("val_ood_set", "accuracy", None)}),
    "lightning-val-slash-set": (["val/clean/loss", "val/clean/acc", "val/noisy/loss_epoch", "val/noisy/acc_epoch"],
                                {"val/clean/loss": ("val_clean", "loss", None),
                                 "val/clean/acc": ("val_clean", "accuracy", None),
                                 "val/noisy/loss_epoch": ("val_noisy", "loss", None),
                                 "val/noisy/acc_epoch": ("val_noisy", "accuracy", None)}),
    "test-sets-and-a-longer-name-first": (["test_a_loss", "test_a_b_loss", "test_a_b_acc"],
                                          {"test_a_loss": ("test_a", "loss", None),
                                           "test_a_b_acc": ("test_a_b", "accuracy", None)}),
    "a-metric-without-its-sets-loss-stays-a-metric": (["eval_loss", "eval_top5_accuracy", "val/metrics/f1"],
                                                      {"eval_loss": ("val", "loss", None),
                                                       "eval_top5_accuracy": ("val", "top5_accuracy", None),
                                                       "val/metrics/f1": ("val", "metrics/f1", None)}),
}


@pytest.mark.parametrize(("tags", "expected"), list(NAMED_EVAL_SETS.values()), ids=list(NAMED_EVAL_SETS))
def test_a_named_eval_set_is_a_split_of_its_own(tags, expected):
    mapping = map_metrics(tags)
    assert {tag: tuple(mapping[tag]) for tag in expected} == expected
