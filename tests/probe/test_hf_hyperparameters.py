"""An HF Trainer run keeps the TrainingArguments that were changed, plus a short always-kept list,
not all ~110 of them (#17): they flooded the Runs page's columns and the parallel coordinates."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
from traindoctor.probe.integrations.transformers import ALWAYS_KEPT, training_hyperparameters  # noqa: E402


def test_only_changed_arguments_and_the_always_kept_ones(tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=3e-5, logging_steps=7,
                                          seed=3, report_to="none", use_cpu=True)
    config = training_hyperparameters(args)
    everything = args.to_dict()
    assert len(everything) > 80  # what used to be recorded
    assert set(ALWAYS_KEPT) & set(everything) <= set(config)  # warmup_ratio is gone in transformers 5
    assert {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "lr_scheduler_type",
            "weight_decay", "seed", "gradient_accumulation_steps"} <= set(config)
    assert config["learning_rate"] == 3e-5 and config["seed"] == 3 and config["logging_steps"] == 7
    # Every other key kept differs from a default instance's value (made here, outside any Trainer).
    defaults = transformers.TrainingArguments(output_dir=str(tmp_path / "out")).to_dict()
    changed = {key for key in config if key not in ALWAYS_KEPT}
    assert all(config[key] != defaults[key] for key in changed), changed
    assert {"logging_steps", "use_cpu"} <= changed and "adam_beta2" not in config
    assert "output_dir" not in config and "logging_dir" not in config
    assert len(config) < 20


def test_a_subclass_keeps_its_own_changed_fields(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class MyArguments(transformers.TrainingArguments):
        dataset: str = dataclasses.field(default=None)

        def __post_init__(self):
            if self.dataset is None:
                raise ValueError("dataset is required")
            super().__post_init__()

    args = MyArguments(output_dir=str(tmp_path / "out"), dataset="sst2", warmup_steps=100, report_to="none")
    config = training_hyperparameters(args)
    assert config["dataset"] == "sst2" and config["warmup_steps"] == 100
    assert "adam_beta2" not in config and len(config) < 25
