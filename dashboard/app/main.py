"""The traindoctor dashboard: ``streamlit run dashboard/app/main.py -- --store DIR``
(``traindoctor ui`` does this for you, see ``dashboard/serve.py``).

Pages live at ``/runs``, ``/run?run=NAME``, ``/classes?run=NAME&step=N`` and
``/compare?runs=A,B``, so every view can be shared as a link.
"""

from __future__ import annotations

import streamlit as st


def _home() -> None:
    """The bare root URL shows the runs table, at its own address."""
    st.switch_page("views/runs.py", query_params=st.query_params.to_dict())


def main() -> None:
    st.set_page_config(page_title="traindoctor", page_icon=":material/monitor_heart:", layout="wide")
    pages = [
        st.Page(_home, title="traindoctor", url_path="home", default=True, visibility="hidden"),
        st.Page("views/runs.py", title="Runs", url_path="runs", icon=":material/table_rows:"),
        st.Page("views/run.py", title="Run", url_path="run", icon=":material/monitoring:"),
        st.Page("views/classes.py", title="Classes", url_path="classes", icon=":material/category:"),
        st.Page("views/compare.py", title="Compare", url_path="compare", icon=":material/compare_arrows:"),
    ]
    st.navigation(pages, position="top").run()


main()
