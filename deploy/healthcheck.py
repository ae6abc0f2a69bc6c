"""Container health probe: exit 0 when GET URL answers 200, 1 otherwise.

    python /opt/msmt/healthcheck.py [URL] [TIMEOUT_S]

The image's HEALTHCHECK uses it on /livez (the process is up); the compose file on /readyz
(the database is reachable and at the schema head). Standard library only: the image has no
curl or wget.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8443/livez"
DEFAULT_TIMEOUT_S = 4.0


def probe(url: str, timeout_s: float) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"unhealthy: {url!r} is not an http(s) URL", file=sys.stderr)
        return 1
    # No proxy: an HTTP(S)_PROXY set for the brokers' calls to the witnesses must not carry the probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    timeout_s = float(argv[2]) if len(argv) > 2 else DEFAULT_TIMEOUT_S
    return probe(url, timeout_s)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
