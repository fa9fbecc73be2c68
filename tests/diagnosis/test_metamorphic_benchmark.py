"""benchmarks/metamorphic.py's transformations do what its docstring says, and its report runs on a stored set."""

from __future__ import annotations

import numpy as np

from benchmarks import metamorphic
from tests.diagnosis.factories import make_run, scalar_rows


def _run():
    steps = np.arange(1, 401)
    train = 2.0 * np.exp(-steps / 80) + 0.3
    val = np.array([1.5, 1.0, 0.7, 0.5])
    return make_run(loss=train, steps=steps, task={"kind": "regression"},
                    frames=[scalar_rows("loss", val, steps=[100, 200, 300, 400], split="val"),
                            scalar_rows("lr", np.full(400, 1e-3), steps=steps, layer="group0")])


def test_scale_and_offset_move_every_global_loss_and_nothing_else():
    run = _run()
    moved = metamorphic.scaled(run, factor=10.0, offset=-2.0)
    assert np.allclose(moved.series("loss").to_numpy(), run.series("loss").to_numpy() * 10 - 2)
    assert np.allclose(moved.series("loss", "val").to_numpy(), run.series("loss", "val").to_numpy() * 10 - 2)
    assert np.allclose(moved.series("lr", layer="group0").to_numpy(), 1e-3)


def test_thinning_keeps_every_kth_training_record():
    thin = metamorphic.thinned(_run(), 4)
    assert list(thin.series("loss").index[:3]) == [4, 8, 12] and len(thin.series("loss")) == 100
    assert len(thin.series("loss", "val")) == 4


def test_window_means_sit_at_each_windows_last_step():
    run = _run()
    windowed = metamorphic.windowed(run, 10)
    loss = windowed.series("loss")
    assert list(loss.index[:2]) == [10, 20] and len(loss) == 40
    assert loss.iloc[0] == np.mean(run.series("loss").to_numpy()[:10])


def test_the_report_runs_on_a_stored_set(capsys):
    assert metamorphic.main(["scale", "10", "--sets", "heldout5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scale 10: ") and "runs transformed" in out
