"""The Streamlit app's pages (``streamlit run app.py``): one module per view, the shared state and caches in
:mod:`webapp.state`, shared drawing helpers in :mod:`webapp.common` and :mod:`webapp.figures` (docs/APP.md)."""
