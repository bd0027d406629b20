"""The live dashboard at ``/ui``: its routes (``routes.py``) and the static page beside them
(``index.html``, ``app.js``, ``app.css``, vendored uPlot under ``vendor/``)."""
