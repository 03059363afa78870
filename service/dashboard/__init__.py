"""The web dashboard: server-rendered pages, Plotly charts built in Python, live refresh.

``router.mount(app)`` wires it into the FastAPI app (see ``service.app``).
"""
