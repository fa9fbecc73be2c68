"""The dashboard: the Streamlit app (``app/``), its data door and its server.

``data`` is the pages' only door to the store and ``serve`` starts the
server; neither imports streamlit or plotly, which only ``app/`` does.
"""
