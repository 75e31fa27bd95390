"""The HTTP service: FastAPI app factory, micro-batching, Prometheus metrics; it mounts the routes of
the model's task and the routers it is given (apps contribute theirs), and imports no app.

``create_app``, ``serve``, ``load_for_serving`` and ``TASK_ROUTES`` are imported on first use: they
load the runtime (and PyTorch), which an app's router module or the command line's parser need not.
"""

from __future__ import annotations

from typing import Any

from attend.serve.routes import RouterSpec, Routes, ServeSettings

__all__ = ["TASK_ROUTES", "RouterSpec", "Routes", "ServeSettings", "create_app", "load_for_serving", "serve"]

_FROM_APP = ("TASK_ROUTES", "create_app", "load_for_serving", "serve")


def __getattr__(name: str) -> Any:
    if name in _FROM_APP:
        from attend.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'attend.serve' has no attribute {name!r}")
