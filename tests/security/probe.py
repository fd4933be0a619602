"""Try each path as the current user; print {path: "ok" | errno name} as JSON.

Standard library only: it runs as `nobody` under the system python3, which needs nothing
from the repo or its venv.  argv: ACTION:PATH ...  (ACTION = connect | open | list)
"""

import errno
import json
import os
import socket
import sys

results = {}
for spec in sys.argv[1:]:
    action, path = spec.split(":", 1)
    try:
        if action == "connect":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(path)
        elif action == "open":
            with open(path, "rb") as handle:
                handle.read(1)
        elif action == "list":
            os.listdir(path)
        results[spec] = "ok"
    except OSError as err:
        code = err.errno or 0
        results[spec] = errno.errorcode.get(code, str(code))
print(json.dumps(results))
