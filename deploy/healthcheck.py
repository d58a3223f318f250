"""Container health check: exit 0 when the local server answers 200 on a path, else 1.

Used by the image's HEALTHCHECK (`/healthz`, liveness) and by compose (`/readyz`). Standard library
only, so it runs in the slim runtime image without curl. When MAGVIT_API_KEYS is set it sends the
first key, so the check keeps working with MAGVIT_AUTH_HEALTH=true.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(path: str = "/healthz", timeout: float = 4.0) -> bool:
    port = os.environ.get("MAGVIT_PORT", "8000")
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
    sys.exit(0 if check(*sys.argv[1:2]) else 1)
