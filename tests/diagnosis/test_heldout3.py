"""The third program hold-out (tests/data/heldout3): its runs load, its labels are well formed, it stays apart.

The three families were written from the rules of 31be2a9 on and are kept out
of the tuning corpus (see tests/diagnosis/make_heldout3.py). These tests do
not diagnose the runs: they check the store and the labels the benchmark
reads (``benchmarks/diagnosis_accuracy.py --corpus tests/data/heldout3``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traindoctor.diagnosis import RULES

ROOT = Path(__file__).resolve().parents[2]
HELDOUT3 = ROOT / "tests" / "data" / "heldout3"
CORPUS = ROOT / "tests" / "data" / "corpus"
LABELS = json.loads((HELDOUT3 / "corpus_labels.json").read_text(encoding="utf-8"))
FAMILIES = {"unet_signals", "lstm_lm_hmm", "set_transformer_points"}


def test_every_label_names_known_rules_and_one_of_the_three_families():
    assert len(LABELS) >= 36
    for name, label in LABELS.items():
        assert label["family"] in FAMILIES, name
        assert set(label["expect"]) | set(label["forbid"]) | set(label["allow"]) <= set(RULES), name
        assert label["healthy"] != bool(label["expect"]), name  # healthy runs expect nothing, faulty ones something
        for expected in label["expect"].values():
            assert expected is None or (len(expected) == 2 and 1 <= expected[0] <= expected[1]), name
    for family in FAMILIES:
        runs = [label for label in LABELS.values() if label["family"] == family]
        assert sum(label["healthy"] for label in runs) >= 4, family
        assert sum(not label["healthy"] for label in runs) >= 6, family


def test_the_fault_labels_cover_every_rule_curves_can_show():
    from benchmarks.diagnosis_accuracy import CURVE_RULES

    labelled = {rule for label in LABELS.values() for rule in label["expect"]}
    assert set(CURVE_RULES) - labelled == set()


def test_every_run_loads_with_its_training_curves():
    from traindoctor.store.reader import open_store
    from traindoctor.store.run_data import load_run

    store = open_store(HELDOUT3)
    for name in LABELS:
        run = load_run(store, name)
        assert run.name == name
        assert run.config.get("family") == LABELS[name]["family"], name
        losses = run.series("loss", "train")
        assert len(losses) >= 3, name  # the shortest run (stopped after 156 steps) logs every 50 steps


def test_kept_apart_from_the_tuning_corpus():
    """The benchmark's leave-one-family-out over tests/data/corpus and the corpus tests never see these runs."""
    from tests.diagnosis.corpus import FAMILY_MODULES

    corpus = json.loads((CORPUS / "corpus_labels.json").read_text(encoding="utf-8"))
    assert set(LABELS) & set(corpus) == set()
    assert FAMILIES & {label["family"] for label in corpus.values()} == set()
    assert FAMILIES & set(FAMILY_MODULES) == set()
    assert sorted(path.name for path in CORPUS.iterdir() if path.name in LABELS) == []
    size = sum(path.stat().st_size for path in HELDOUT3.rglob("*") if path.is_file())
    assert size < 5 * 2**20, f"tests/data/heldout3 is {size / 2**20:.1f} MB"


def test_stored_labels_are_the_recipes_labels():
    """Labels come from how each run was built (the family modules' recipes), never from the diagnosis."""
    pytest.importorskip("torch")
    from tests.diagnosis.make_heldout3 import heldout3_specs

    specs = heldout3_specs()
    expected = {spec.name: {"description": spec.description, "healthy": spec.healthy, "family": spec.family,
                            "expect": spec.expect, "forbid": spec.forbid, "allow": spec.allow} for spec in specs}
    assert json.loads(json.dumps(expected)) == LABELS
