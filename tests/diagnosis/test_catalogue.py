"""The rule catalogue: docs/rules.md is what the records generate, and constants keep their comments."""

from __future__ import annotations

import importlib.util
import numbers
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from traindoctor.diagnosis.catalogue import COMMAND, catalogue_markdown, module_constants, rule_constants
from traindoctor.diagnosis.engine import RECORDS

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "docs" / "rules.md"


def test_the_committed_catalogue_is_the_generated_one():
    committed = CATALOGUE.read_text(encoding="utf-8")
    assert committed == catalogue_markdown(), f"docs/rules.md is stale: regenerate it with `{COMMAND}`"


def test_the_catalogue_lists_every_rule_with_its_thresholds():
    text = catalogue_markdown()
    assert [rule_id for rule_id in RECORDS if f"### `{rule_id}`" not in text] == []
    assert "`SPIKE_PEAK_SIGMAS = 10.0`" in text and "`SMALL_CLASS_FRACTION = 1.0 / 3.0 (= 0.3333)`" in text
    assert "\\|\\|Δw\\|\\|" in text  # a | inside a table cell is escaped


def test_every_threshold_is_a_commented_number_of_the_rule_modules_and_every_number_belongs_to_a_rule():
    constants = rule_constants()
    numeric = {name for name, constant in constants.items()
               if isinstance(constant.value, numbers.Number) and not isinstance(constant.value, bool)}
    listed = {name for record in RECORDS.values() for name in record.thresholds}
    assert sorted(listed - numeric) == []
    assert sorted(numeric - listed) == []
    assert [name for name in listed if not constants[name].comment] == []


def test_the_module_command_prints_the_catalogue(tmp_path):
    result = subprocess.run([sys.executable, "-m", "traindoctor.diagnosis.catalogue"], capture_output=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode("utf-8") == catalogue_markdown()


def _module(tmp_path: Path, source: str):
    path = tmp_path / "constants_demo.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("constants_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMMENT_CASES = {
    "block-above": ("# Why ten.\nTEN = 10\n", {"TEN": "Why ten."}),
    "block-shared-by-the-constants-below": ("# Both.\nA = 1\nB = 2\n", {"A": "Both.", "B": "Both."}),
    "nearest-block-wins": ("# First.\nA = 1\n# ...then second.\nB = 2\nC = 3\n",
                           {"A": "First.", "B": "...then second.", "C": "...then second."}),
    "wrapped-block-joined": ("# One\n# two.\nA = 1\n", {"A": "One two."}),
    "blank-line-breaks-the-link": ("# Lonely.\n\nA = 1\n", {"A": ""}),
    "code-breaks-the-link": ("# About f.\ndef f():\n    pass\nA = 1\n", {"A": ""}),
    "trailing-comment-added": ("# Block.\nA = 0.5  # half\nB = 2  # own only\n",
                               {"A": "Block. — half", "B": "Block. — own only"}),
    "hash-in-a-string-is-not-a-comment": ("A = '#not'\n", {"A": ""}),
    "lower-case-names-are-not-constants": ("# x.\nvalue = 1\n", {}),
}


@pytest.mark.parametrize(("source", "expected"), list(COMMENT_CASES.values()), ids=list(COMMENT_CASES))
def test_constant_comments(tmp_path, source, expected):
    constants = module_constants(_module(tmp_path, source))
    assert {name: constant.comment for name, constant in constants.items()} == expected


def test_constant_values_and_literals(tmp_path):
    constants = module_constants(_module(tmp_path, "A = 5e-3\nB = 1.0 / 3.0\nC = 10_000\n"))
    assert [constants[name].shown() for name in "ABC"] == ["A = 5e-3", "B = 1.0 / 3.0 (= 0.3333)", "C = 10_000"]
    assert constants["B"].value == pytest.approx(1 / 3)
