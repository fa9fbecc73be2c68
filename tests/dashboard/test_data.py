

def test_opening_a_fragmented_run_merges_its_segments_without_losing_rows(tmp_path):
    from traindoctor.dashboard.data import load_run_view, open_store
    from traindoctor.store.compact import FRAGMENTED_FILES
    from traindoctor.store.segments import RunWriter

    writer = RunWriter(tmp_path, name="live", background=False)
    for step in range(1, FRAGMENTED_FILES + 11):
        writer.add_scalars(step=step, name="loss", value=1.0 / step)
        writer.flush()
    store = open_store(tmp_path)
    view = load_run_view(store, "live")
    assert len(list((tmp_path / writer.run_id / "scalars").glob("*.parquet"))) == 1
    assert store.scalars([writer.run_id], names=["loss"])["step"].tolist() == list(range(1, FRAGMENTED_FILES + 11))
    assert view.meta["status"] == "running"
    writer.close()
