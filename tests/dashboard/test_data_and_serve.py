"""traindoctor.dashboard.data's dashboard helpers and traindoctor.dashboard.serve's command line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from traindoctor.dashboard import data, serve
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter
from tests.dashboard.factories import make_run, write_steps


@pytest.mark.parametrize(("argv", "expected"), [
    (["--store", "/data/runs"], "/data/runs"),
    (["--store=/data/runs"], "/data/runs"),
    (["--other", "x", "--store", "rel"], "rel"),
    ([], "from-env"),
], ids=["separate", "equals", "among-others", "env-fallback"])
def test_store_path_from_args(argv, expected, monkeypatch):
    monkeypatch.setenv("TRAINDOCTOR_STORE", "from-env")
    assert data.store_path_from_args(argv) == Path(expected)


def test_run_version_changes_when_a_segment_lands_and_not_otherwise(tmp_path):
    writer = make_run(tmp_path, "live", steps=10, status="running")
    store = Store(tmp_path)
    before = data.run_version(store, writer.run_id)
    assert data.run_version(store, writer.run_id) == before
    write_steps(writer, 11, 20)
    writer.flush()
    assert data.run_version(store, writer.run_id) != before
    writer.close()


def test_curve_points_are_bounded_and_keep_a_one_step_spike(tmp_path):
    steps = np.arange(1, 20_001)
    values = np.ones(len(steps))
    values[12_345] = 1e6
    with RunWriter(tmp_path, name="long", background=False) as writer:
        writer.add_scalars(step=steps, name="loss", value=values)
        run_id = writer.run_id
    points = data.curve_points(Store(tmp_path), [run_id])
    assert len(points) <= data.MAX_POINTS_PER_LINE
    assert points["value"].max() == 1e6 and int(points.loc[points["value"].idxmax(), "step"]) == 12_346


def test_load_run_view_holds_what_the_run_page_draws(tmp_path):
    run_id = make_run(tmp_path, "alpha", steps=100, events=(("nan_loss", "x", 5),))
    view = data.load_run_view(Store(tmp_path), "alpha")
    assert view.meta["run_id"] == run_id
    assert set(view.curves["name"]) == {"loss", "accuracy", "grad_norm"}
    assert view.curves["layer"].isna().all()
    assert set(view.lr["layer"]) == {"group0"}
    assert set(view.update_ratio["layer"]) == {"conv1.weight", "conv1.bias", "fc.weight", "fc.bias"}
    assert list(view.events["kind"]) == ["nan_loss"]


def test_diagnose_run_uses_the_engine(monkeypatch):
    import traindoctor.diagnosis

    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", lambda run: ["found"], raising=False)
    assert data.diagnose_run(object()) == ["found"]


def test_series_names_leave_out_per_layer_only_statistics(tmp_path):
    make_run(tmp_path, "alpha", steps=20)
    store = Store(tmp_path)
    names = data.series_names(store, store.run_ids())
    assert ("train", "loss") in names and ("val", "accuracy") in names
    assert not [n for n in names if n[1] in data.PER_LAYER_ONLY]


# ------------------------------------------------------------------ serve

def option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == name]


def test_command_is_safe_by_default(tmp_path):
    command = serve.build_command(tmp_path / "runs")
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(serve.SERVER_PATH)]
    expected = {
        "--server.address": ["127.0.0.1"], "--server.headless": ["true"], "--server.enableCORS": ["true"],
        "--server.enableXsrfProtection": ["true"], "--browser.gatherUsageStats": ["false"],
        "--client.showErrorDetails": ["none"], "--server.port": ["8501"],
        # The agent API drives the app over HTTP; the welcome banner looks up this machine's public IP.
        "--server.enableAgentApi": ["false"], "--logger.hideWelcomeMessage": ["true"],
    }
    for name, values in expected.items():
        assert option(command, name) == values, name
    assert set(option(command, "--server.allowedHosts")) == {"127.0.0.1", "localhost", "::1"}
    # The store travels as a script argument after "--", never through the page.
    assert command[-3:] == ["--", "--store", str((tmp_path / "runs").resolve())]


def test_exposed_host_allows_its_own_names_and_given_ones(tmp_path):
    command = serve.build_command(tmp_path, host="0.0.0.0", port=9000)
    hosts = option(command, "--server.allowedHosts")
    assert "localhost" in hosts and "0.0.0.0" not in hosts and option(command, "--server.address") == ["0.0.0.0"]
    given = serve.build_command(tmp_path, host="0.0.0.0", allowed_hosts=["dash.example.com"])
    assert option(given, "--server.allowedHosts") == ["dash.example.com"]


@pytest.mark.parametrize("port", [0, 70000, "8501"], ids=["zero", "too-big", "text"])
def test_bad_port_is_a_one_line_error(tmp_path, port):
    with pytest.raises(ValueError, match="port must be an integer"):
        serve.build_command(tmp_path, port=port)


def test_app_environment_names_the_store_and_turns_off_usage_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = serve.app_environment(tmp_path)
    assert env["PYTHONPATH"] == "/elsewhere"  # the installed package is found without it
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert env["TRAINDOCTOR_STORE"] == str(tmp_path.resolve())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH is Python 3.11+")
def test_a_module_in_the_current_folder_does_not_replace_the_servers_own(tmp_path):
    # `traindoctor ui` run from a project folder holding a click.py: Streamlit imported it and died.
    import subprocess

    (tmp_path / "click.py").write_text("raise SystemExit('the user\'s click.py was imported')\n")
    done = subprocess.run([sys.executable, "-m", "streamlit", "version"], cwd=tmp_path, capture_output=True,
                          text=True, env=serve.app_environment(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr


def test_streamlit_serves_the_server_module_as_an_asgi_app():
    """``streamlit run server.py`` must find ``app`` (st.App with our middleware) by reading the
    file; if Streamlit's discovery changed, it would run server.py as a page script instead and
    serve a blank app without the security middleware. The browser tests check the headers live."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(serve.SERVER_PATH)
    assert (found.is_asgi_app, found.import_string) == (True, "server:app")


def test_every_option_the_command_sets_exists_in_this_streamlit():
    """A renamed or removed option would make `streamlit run` refuse to start."""
    from streamlit import config

    command = serve.build_command("runs", host="0.0.0.0")
    options = [part[2:] for part in command if part.startswith("--") and "." in part]
    assert "server.enableAgentApi" in options and "logger.hideWelcomeMessage" in options
    assert [option for option in options if option not in config._config_options_template] == []
