"""``traindoctor export`` onto an existing file names the CLI's own switch (found trying it as a new user)."""

from __future__ import annotations

import numpy as np

from traindoctor.cli import main
from traindoctor.store.segments import RunWriter


def test_export_onto_an_existing_file_names_overwrite(capsys, tmp_path):
    store = tmp_path / "store"
    writer = RunWriter(store, name="r", background=False)
    writer.add_scalars(step=np.arange(1, 4), name="loss", value=np.array([3.0, 2.0, 1.0]))
    writer.close("finished")
    target = tmp_path / "out.duckdb"
    assert main(["export", "--duckdb", str(target), "--store", str(store)]) == 0
    size = target.stat().st_size
    capsys.readouterr()
    assert main(["export", "--duckdb", str(target), "--store", str(store)]) == 2
    error = capsys.readouterr().err.strip()
    # It used to say "pass overwrite=True (CLI: choose another file)": the Python argument, not --overwrite.
    assert error == f"traindoctor: error: {target} already exists: pass --overwrite to replace it, or choose another file"
    assert target.stat().st_size == size
    assert main(["export", "--duckdb", str(target), "--store", str(store), "--overwrite"]) == 0


def test_export_onto_a_folder_says_it_is_one_with_or_without_overwrite(capsys, tmp_path):
    # `export --duckdb runs` (the store's own name): "already exists: pass --overwrite", then with
    # --overwrite "[Errno 21] Is a directory: '.tmp-runs-…' -> 'runs'".
    store = tmp_path / "store"
    writer = RunWriter(store, name="r", background=False)
    writer.add_scalars(step=np.arange(1, 4), name="loss", value=np.array([3.0, 2.0, 1.0]))
    writer.close("finished")
    before = sorted(p.name for p in store.iterdir())
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main(["export", "--duckdb", str(store), "--store", str(store), *extra]) == 2
        assert capsys.readouterr().err.strip() == f"traindoctor: error: {store} is a folder: give the database a file name"
    assert sorted(p.name for p in store.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
