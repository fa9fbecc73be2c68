"""The run pickers of the Run, Compare and Classes pages search the run catalog on the server
(issue 13): the best matches of a search, newest or worst first, with the chosen runs kept."""

from __future__ import annotations

import numpy as np
import pytest

from traindoctor.dashboard import data
from traindoctor.store.catalog import Catalog
from traindoctor.store.listing import FilterError
from traindoctor.store.reader import Store
from tests.dashboard.test_runs_health import _findings, write_losses

# name, lr; written in this order, so the last is the newest.
RUNS = [("resnet-a", 0.1), ("resnet-b", 1e-4), ("vit-a", 1e-4), ("vit-b", 0.3), ("ResNet-c", 3e-3)]


@pytest.fixture()
def small_store(tmp_path):
    ids = {name: write_losses(tmp_path, name, np.full(50, 2.0), config={"lr": lr}) for name, lr in RUNS}
    return Store(tmp_path), ids


def names(store: Store, choices: data.RunChoices) -> list[str]:
    return [choices.labels[run_id] for run_id in choices.options]


@pytest.mark.parametrize(("search", "expected"), [
    ("", ["ResNet-c", "vit-b", "vit-a", "resnet-b", "resnet-a"]),
    ("resnet", ["ResNet-c", "resnet-b", "resnet-a"]),
    ("RESNET net-b", ["resnet-b"]),
    ("lr<1e-3", ["vit-a", "resnet-b"]),
    ("resnet lr<1e-3", ["resnet-b"]),
    ("'name~vit' lr>=0.3", ["vit-b"]),
    ("nothing-like-it", []),
], ids=["all-newest-first", "word", "two-words-any-case", "filter", "word-and-filter", "quoted-filters", "none"])
def test_a_search_offers_the_matching_runs_newest_first(small_store, search, expected):
    store, _ = small_store
    choices = data.run_choices(store, search)
    assert names(store, choices) == expected
    assert (choices.matched, choices.total) == (len(expected), len(RUNS))


def test_only_the_best_matches_are_offered_and_the_chosen_run_is_always_kept(small_store):
    store, ids = small_store
    choices = data.run_choices(store, "vit", keep=["resnet-a"], limit=1)
    assert names(store, choices) == ["resnet-a", "vit-b"]  # the kept run first, then one match
    assert choices.matched == 2 and choices.resolved == {"resnet-a": ids["resnet-a"]}
    by_id = data.run_choices(store, "nothing-like-it", keep=[ids["vit-a"]])
    assert by_id.options == [ids["vit-a"]] and by_id.matched == 0


def test_worst_first_is_the_runs_page_health_order(small_store, monkeypatch):
    import traindoctor.diagnosis

    store, ids = small_store
    verdicts = {"resnet-a": _findings("critical"), "vit-a": _findings("warning"), "vit-b": [],
                "resnet-b": _findings("info"), "ResNet-c": None}
    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: verdicts[run.name], raising=False)
    data.diagnose_first(store, [ids[name] for name, found in verdicts.items() if found is not None], budget_s=60)
    worst = data.run_choices(store, sort=data.PICKER_ORDERS["worst first"])
    assert names(store, worst) == list(data.runs_page(store).rows["name"])
    assert names(store, worst) == ["resnet-a", "vit-a", "ResNet-c", "resnet-b", "vit-b"]
    assert names(store, data.run_choices(store, "has:warning", sort="-health")) == ["resnet-a", "vit-a"]


def test_a_repeated_name_is_labelled_with_its_id_and_resolves_to_the_newest(tmp_path):
    older = write_losses(tmp_path, "dup", np.full(20, 1.0))
    newer = write_losses(tmp_path, "dup", np.full(20, 1.0))
    plain = write_losses(tmp_path, "a,b", np.full(20, 1.0))
    choices = data.run_choices(Store(tmp_path), keep=["dup"])
    assert choices.resolved == {"dup": newer}
    assert choices.labels[older] == f"dup ({older})" and choices.references[older] == older
    assert choices.labels[plain] == "a,b" and choices.references[plain] == plain  # a comma would split ?runs=


@pytest.mark.parametrize(("reference", "suggested"), [("resnet-x", ["resnet-a", "resnet-b"]), ("zzz", [])],
                         ids=["typo", "nothing-close"])
def test_a_reference_that_names_no_run_is_unresolved_with_close_names(small_store, reference, suggested):
    store, _ = small_store
    choices = data.run_choices(store, keep=[reference])
    assert choices.resolved == {reference: None}
    assert sorted(choices.suggestions[reference][:2]) == suggested
    assert reference not in choices.options


def test_a_reference_that_is_part_of_a_longer_name_suggests_it(tmp_path):
    # /run?run=version_0 for an imported lightning_logs/version_0 (ratio 0.55): no suggestion at all.
    write_losses(tmp_path, "lightning_logs/version_0", np.full(50, 2.0))
    write_losses(tmp_path, "other", np.full(50, 2.0))
    choices = data.run_choices(Store(tmp_path), keep=["version_0"])
    assert choices.suggestions["version_0"] == ["lightning_logs/version_0"]


@pytest.mark.parametrize("search", ["name~'open", "learning_rate<1", "lr<<3"], ids=["quote", "no-field", "operator"])
def test_a_search_that_cannot_be_read_is_a_filter_error(small_store, search):
    store, _ = small_store
    with pytest.raises(FilterError):
        data.run_choices(store, search)


def test_a_remembered_index_still_lists_a_run_added_since(tmp_path):
    """The catalog keeps the parsed index between listings; a run added (or the index rewritten by
    another process) since is listed all the same."""
    write_losses(tmp_path, "first", np.full(20, 1.0))
    catalog = Catalog(tmp_path, remember=True)
    assert [row["name"] for row in catalog.listing()] == ["first"]
    write_losses(tmp_path, "second", np.full(20, 1.0))
    Catalog(tmp_path).listing()  # another reader rewrites the index
    write_losses(tmp_path, "third", np.full(20, 1.0))
    assert sorted(row["name"] for row in catalog.listing()) == ["first", "second", "third"]
    assert sorted(row["name"] for row in catalog.listing()) == ["first", "second", "third"]


@pytest.mark.slow
def test_the_run_page_picker_searches_and_keeps_the_chosen_run(app, store):
    _, ids = store
    at = app("views/run.py", run="alpha")
    at.text_input(key="select_run_search").set_value("gam").run()
    assert not at.exception
    picker = at.selectbox(key="select_run")
    assert [option.split(" · ")[0] for option in picker.options] == ["alpha", "gamma"]
    assert at.title[0].value == "alpha"
    picker.set_value(ids["gamma"]).run()
    assert at.title[0].value == "gamma" and at.query_params["run"] == "gamma"
    at.text_input(key="select_run_search").set_value("lr<<1").run()
    assert [w.value for w in at.warning] and at.title[0].value == "gamma"  # the error, and all runs offered
    assert len(at.selectbox(key="select_run").options) == 3
