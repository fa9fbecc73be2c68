"""Plotly figure builders: pure functions of pandas frames (no Streamlit, no store).

Plotly renders some HTML in titles, legends, axis, tick and hover labels: every
name that comes from a run (split, layer, class, metric, config key or value,
run label, rule id) is passed through ``text.plotly_text`` where a figure shows it.
"""
