"""Small runs written with the real RunWriter, for dashboard tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from traindoctor.store.segments import RunWriter

LAYERS = ("conv1.weight", "conv1.bias", "fc.weight", "fc.bias")


def write_steps(writer: RunWriter, start: int, stop: int, *, nan_from: int | None = None,
                layer_every: int = 5, num_classes: int = 3, eval_every: int = 20, seed: int = 0) -> None:
    """Steps ``start..stop-1`` of a healthy-looking classification run (loss decays from ln C)."""
    rng = np.random.default_rng(seed + start)
    steps = np.arange(start, stop)
    loss = np.log(num_classes) * np.exp(-steps / 150.0) + 0.05 + 0.02 * rng.standard_normal(len(steps))
    if nan_from is not None:
        loss = np.where(steps >= nan_from, np.nan, loss)
    epoch = steps // 50
    writer.add_scalars(step=steps, name="loss", value=loss, epoch=epoch)
    writer.add_scalars(step=steps, name="accuracy", value=np.clip(1 - loss / 1.2, 0, 1), epoch=epoch)
    writer.add_scalars(step=steps, name="lr", value=0.1, layer="group0", epoch=epoch)
    writer.add_scalars(step=steps, name="grad_norm", value=1.0 + 0.1 * rng.random(len(steps)), epoch=epoch)
    for step in steps[steps % layer_every == 0]:
        writer.add_scalars(step=int(step), name="grad_norm", value=rng.random(len(LAYERS)) + 0.1, layer=LAYERS)
        writer.add_scalars(step=int(step), name="update_ratio", value=10 ** rng.uniform(-4, -2, len(LAYERS)), layer=LAYERS)
    for step in steps[steps % eval_every == 0]:
        writer.add_scalars(step=int(step), name="loss", value=float(loss[step - start]) + 0.15, split="val",
                           epoch=int(step) // 50)
        writer.add_scalars(step=int(step), name="accuracy", value=0.5 + step / 1000 - 0.02 * seed, split="val",
                           epoch=int(step) // 50)
        counts = np.full((num_classes, num_classes), 2) + np.diag(np.arange(num_classes) * 5 + int(step) // 10)
        writer.add_confusion(step=int(step), counts=counts, split="val", epoch=int(step) // 50)


def make_run(store: Path, name: str, *, steps: int = 200, config: dict | None = None, status: str = "finished",
             nan_from: int | None = None, events: tuple = (), num_classes: int = 3, seed: int = 0) -> str:
    """Write a run and close it with ``status`` (``running`` leaves it open: the writer is returned then)."""
    writer = RunWriter(store, name=name, config=config or {"lr": 0.1, "batch_size": 32},
                       task={"num_classes": num_classes, "class_names": [f"class{i}" for i in range(num_classes)]},
                       background=False)
    write_steps(writer, 1, steps + 1, nan_from=nan_from, num_classes=num_classes, seed=seed)
    for kind, detail, step in events:
        writer.add_event(kind, detail, step=step)
    writer.flush()
    if status == "running":
        return writer
    writer.close(status=status, detail="Traceback (most recent call last):\nRuntimeError: boom" if status == "crashed" else None)
    return writer.run_id


# A URL nothing answers: if the page ever made the browser fetch it, the request log shows it.
BEACON = "http://127.0.0.1:9/beacon"


def hostile(field: str) -> str:
    """A name that tries Markdown (an image beacon, bold) and HTML (an image with a script) on the page."""
    return f"![{field}]({BEACON}?{field}) **bold {field}** <img src={BEACON}?{field}-html onerror=alert(1)>"


# What must never reach a Markdown renderer outside a backslash escape: each part of hostile().
HOSTILE_FRAGMENTS = ("![", "](", "**bold", "<img", "://")


def make_hostile_run(store: Path) -> str:
    """A finished run whose every user-controlled text is :func:`hostile`: its name, a config key
    and value, a layer, a class, a split, a metric, an event kind and detail."""
    with RunWriter(store, name=hostile("name"), config={hostile("key"): hostile("value"), "lr": 0.1},
                   task={"num_classes": 2, "class_names": [hostile("class"), "plain"]}, background=False) as writer:
        steps = np.arange(1, 61)
        loss = 1.0 / steps
        writer.add_scalars(step=steps, name="loss", value=loss, epoch=steps // 20)
        writer.add_scalars(step=steps, name="lr", value=0.1, layer="group0")
        writer.add_scalars(step=steps, name=hostile("metric"), value=loss, split=hostile("split"))
        for step in range(5, 61, 5):
            layers = (hostile("layer"), "fc.bias")
            writer.add_scalars(step=step, name="update_ratio", value=[1e-3, 2e-3], layer=layers)
            writer.add_scalars(step=step, name="grad_norm", value=[0.5, 0.2], layer=layers)
        for split in ("val", hostile("split")):
            writer.add_scalars(step=60, name="loss", value=0.5, split=split)
            writer.add_confusion(step=30, counts=[[5, 1], [2, 4]], split=split)
            writer.add_confusion(step=60, counts=[[6, 0], [1, 5]], split=split)
        writer.add_event(hostile("event"), hostile("detail"), step=5)
        return writer.run_id
