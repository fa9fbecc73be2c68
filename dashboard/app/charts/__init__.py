"""Plotly figure builders: pure functions of pandas frames (no Streamlit, no store)."""
