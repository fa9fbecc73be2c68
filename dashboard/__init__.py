"""traindoctor's dashboard, CLI and diagnosis engine.

Kept empty on purpose: importing ``dashboard.diagnosis`` or ``dashboard.cli``
must not pull in Streamlit or plotly.
"""
