"""The traindoctor dashboard's pages. ``traindoctor ui`` serves them through
``server.py`` (see ``dashboard/serve.py``); ``streamlit run dashboard/app/main.py
-- --store DIR`` serves them too, without ``security.py``'s protections.

Pages live at ``/runs``, ``/run?run=NAME``, ``/classes?run=NAME&step=N`` and
``/compare?runs=A,B``, so every view can be shared as a link.
"""

from __future__ import annotations

import streamlit as st

from traindoctor.store.errors import StoreError


def _home() -> None:
    """The bare root URL shows the runs table, at its own address."""
    st.switch_page("views/runs.py", query_params=st.query_params.to_dict())


def main() -> None:
    # An emoji favicon is drawn by the page itself (a data: URL); a ":material/…:"
    # one is fetched from fonts.gstatic.com on every page load. The pages'
    # material icons come with Streamlit's own font.
    st.set_page_config(page_title="traindoctor", page_icon="🩺", layout="wide")
    pages = [
        st.Page(_home, title="traindoctor", url_path="home", default=True, visibility="hidden"),
        st.Page("views/runs.py", title="Runs", url_path="runs", icon=":material/table_rows:"),
        st.Page("views/run.py", title="Run", url_path="run", icon=":material/monitoring:"),
        st.Page("views/classes.py", title="Classes", url_path="classes", icon=":material/category:"),
        st.Page("views/compare.py", title="Compare", url_path="compare", icon=":material/compare_arrows:"),
    ]
    page = st.navigation(pages, position="top")
    try:
        page.run()
    except StoreError as error:  # a bucket that stopped answering: one line, not Streamlit's error box
        from traindoctor.dashboard.app.views.common import show_store_error

        show_store_error(error)


main()
