"""The dashboard's server: Streamlit's own (``st.App``) serving ``main.py``,
with :class:`~traindoctor.dashboard.app.security.SecurityMiddleware` in front.

``streamlit run dashboard/app/server.py`` finds ``app`` below and serves it
with uvicorn: Streamlit's documented way to add ASGI middleware. The pages
are ``main.py``'s, as with ``streamlit run main.py``, and every ``--server.*``
option on the command line still applies. :mod:`traindoctor.dashboard.serve`
builds that command.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from traindoctor.dashboard.app.security import SecurityMiddleware

# Streamlit finds this by reading the file (an assignment of st.App(...) named
# `app`), then imports the module and serves the object.
app = st.App(Path(__file__).with_name("main.py"), middleware=[Middleware(SecurityMiddleware)])
