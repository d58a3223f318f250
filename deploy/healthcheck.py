"""Container health check: exit 0 when a local server answers 200 on a path, else 1.

    healthcheck.py [PATH [PORT]]     PATH default /healthz, PORT default MAGVIT_PORT or 8000

Used by the image's HEALTHCHECK (`/healthz`, the API's liveness), by compose for the API
(`/readyz`) and for workers (`/metrics 9100`: a worker has no HTTP API, and its metrics server
starts only once the model is loaded). Standard library only, so it runs in the slim runtime
image without curl. When MAGVIT_API_KEYS is set it sends the first key, so the check keeps
working with MAGVIT_AUTH_HEALTH=true (the workers' metrics server ignores it).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(path: str = "/healthz", timeout: float = 4.0, port: int | str | None = None) -> bool:
    port = port or os.environ.get("MAGVIT_PORT", "8000")
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    keys = [k.strip() for k in os.environ.get("MAGVIT_API_KEYS", "").split(",") if k.strip()]
    if keys:
        request.add_header("Authorization", f"Bearer {keys[0]}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # HTTPError (4xx/5xx) is a URLError too
        return False


if __name__ == "__main__":
    path, port = (sys.argv[1:3] + [None, None])[:2]
    sys.exit(0 if check(path or "/healthz", port=port) else 1)
