"""The server the example clients run against: the real server on port 0 over the tiny model, with the fixtures the
server tests build it with (a fixture is found in a conftest above the test or imported into one)."""

from tests.server.conftest import make_text_engine, tiny_text_model
from tests.server.transport.conftest import serve_engines, start_server

__all__ = ["make_text_engine", "serve_engines", "start_server", "tiny_text_model"]
