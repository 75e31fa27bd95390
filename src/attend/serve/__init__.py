"""The HTTP service: FastAPI app factory, micro-batching, Prometheus metrics; it mounts the routes of
the model's task and the routers it is given (apps contribute theirs), and imports no app."""

from attend.serve.routes import RouterSpec, Routes, ServeSettings

__all__ = ["RouterSpec", "Routes", "ServeSettings"]
