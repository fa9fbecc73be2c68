"""The Streamlit app: pages (``views/``) and plotly figures (``charts/``).

The only part of traindoctor that imports streamlit or plotly. Started by
:mod:`traindoctor.dashboard.serve` as ``streamlit run dashboard/app/server.py``
(``server.py`` serves ``main.py`` behind ``security.py``'s middleware); user
text goes through ``text.py`` wherever it is shown.
"""
