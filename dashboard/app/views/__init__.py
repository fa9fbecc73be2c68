"""The dashboard's pages (run by ``st.navigation`` from ``dashboard/app.py``) and their shared widgets."""
