"""One logging set-up for every process: plain lines on stdout, filed per process by supervisor."""

from __future__ import annotations

import logging
import os
import sys


def setup(service: str) -> logging.Logger:
    # The format names no source line, thread or process: skip looking them up for each of
    # the lines (one per Docker call), as the logging HOWTO's "Optimization" advises.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    level = os.environ.get("ROUTED_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    return logging.getLogger(service)
