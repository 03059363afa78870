"""Shared test support: loopback ports, live servers, processes and study specs.

* :mod:`tests.support.ports`: ``bound_socket`` (port 0, socket kept: no race) and
  ``free_port`` (for a child process that must bind the port itself).
* :mod:`tests.support.processes`: ``Process`` (a child with its log in a file),
  ``clean_env`` and ``wait_for``.
* :mod:`tests.support.servers`: the two ways to run the real server:
  ``live_app``/``serve_app`` (uvicorn in a thread on a held socket, tokens minted,
  for API and CLI tests) and ``ServerProcess`` (``python -m service.cli server``,
  bootstrap tokens, restartable on its port, for end-to-end and fault tests).
* :mod:`tests.support.specs`: ``study_spec``, the one study spec builder (the
  default workload checks settings: synthetic spaces such as ``TOY_SPACE`` need
  ``workload="toy"`` or similar).
"""

from tests.support.ports import bound_socket, free_port
from tests.support.processes import Process, clean_env, wait_for
from tests.support.servers import API, LiveApp, ServerProcess, live_app, serve_app
from tests.support.specs import MNIST_SPACE, TOY_SPACE, study_spec

__all__ = [
    "API",
    "MNIST_SPACE",
    "TOY_SPACE",
    "LiveApp",
    "Process",
    "ServerProcess",
    "bound_socket",
    "clean_env",
    "free_port",
    "live_app",
    "serve_app",
    "study_spec",
    "wait_for",
]
