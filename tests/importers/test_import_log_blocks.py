"""`import log` reads HF Trainer's log_metrics() blocks as one record each (#12, tests/data/real_logs): the train
block is the run's summary (its train_loss is the mean over the run, not a point of the loss curve), an eval or test
block an evaluation at the last step. Read line by line, each "key = value" line used to become a record of its own,
each at a new step."""

from __future__ import annotations

import math

from traindoctor.store.importers import import_source
from tests.importers.conftest import imported_series

LOG = """{'loss': 2.5, 'learning_rate': 5e-05, 'epoch': 1.0}
{'loss': 2.0, 'learning_rate': 4e-05, 'epoch': 2.0}
{'loss': 1.5, 'learning_rate': 3e-05, 'epoch': 3.0}
***** train metrics *****
  epoch                    =        3.0
  train_loss               =     2.0000
  train_runtime            = 0:01:47.06
  train_samples_per_second =      6.184
***** eval metrics *****
  epoch                   =        3.0
  eval_loss               =        nan
  eval_accuracy           =     0.4213
Saving model checkpoint
"""


def test_metrics_blocks_are_one_summary_and_one_evaluation(tmp_path, store_root):
    path = tmp_path / "run.log"
    path.write_text(LOG)
    [result] = import_source("log", store_root, path)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert list(zip(loss["step"], loss["value"])) == [(1, 2.5), (2, 2.0), (3, 1.5)]  # the mean is no curve point
    summary = imported_series(store_root, result.run_id, "user", "train_loss")
    assert summary["value"].tolist() == [2.0]
    assert imported_series(store_root, result.run_id, "user", "train_samples_per_second")["step"].tolist() == [3]
    val_loss = imported_series(store_root, result.run_id, "val", "loss")
    assert val_loss["step"].tolist() == [3] and math.isnan(val_loss["value"].iloc[0])
    assert imported_series(store_root, result.run_id, "val", "accuracy")["value"].tolist() == [0.4213]


def test_a_block_at_the_end_of_the_file_is_read(tmp_path, store_root):
    path = tmp_path / "run.log"
    path.write_text("step 10: loss 1.25\n***** eval metrics *****\n  eval_loss = 1.5")
    [result] = import_source("log", store_root, path)
    assert imported_series(store_root, result.run_id, "val", "loss")["step"].tolist() == [10]
