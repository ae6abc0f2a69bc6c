"""A client for one agency: authenticate, submit envelopes, read and acknowledge the inbox.

Every request carries a fresh single-use token. Transport errors are retried with
backoff; a submission is safe to retry because the broker de-duplicates by item id.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from .auth import mint_token
from .core import ApiPrivateKey
from .errors import BrokerError, BrokerUnavailable

ENVELOPE_MEDIA_TYPE = "application/vnd.msmt.envelope"


class Client:
    def __init__(
        self,
        base_url: str,
        identity: str,
        api_key: ApiPrivateKey,
        *,
        audience: str = "msmt-broker",
        transport: httpx.BaseTransport | None = None,
        retries: int = 4,
        timeout: float = 60.0,
    ) -> None:
        self.identity = identity
        self._key = api_key
        self._audience = audience
        self._retries = retries
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.2
        for attempt in range(self._retries + 1):
            headers = {"Authorization": f"Bearer {mint_token(self._key, self.identity, self._audience)}"}
            headers.update(kwargs.pop("headers", {}))
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise BrokerUnavailable(f"cannot reach the broker: {exc}") from exc
            else:
                if response.status_code < 500 or attempt == self._retries:
                    if response.status_code >= 400:
                        try:
                            problem = response.json()
                        except ValueError:
                            problem = {"detail": response.text[:200]}
                        raise BrokerError(response.status_code, problem)
                    return response
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def submit(self, envelope: bytes) -> dict[str, Any]:
        """Submit a sealed envelope; safe to call again after a network error."""
        response = self._request(
            "POST", "/v1/items", content=envelope, headers={"Content-Type": ENVELOPE_MEDIA_TYPE}
        )
        result: dict[str, Any] = response.json()
        return result

    def inbox(self, after: int = 0, limit: int = 100, wait: float = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"after": after, "limit": limit, "wait": wait}
        result: dict[str, Any] = self._request("GET", "/v1/inbox", params=params).json()
        return result

    def fetch(self, item_id: str) -> bytes:
        return self._request("GET", f"/v1/items/{item_id}").content

    def acknowledge(self, seqs: list[int]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/inbox/ack", json={"seqs": seqs}).json()
        return result

    def status(self, item_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/items/{item_id}/status").json()
        return result

    def directory(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/directory").json()
        return result

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self._request(method, f"/v1/admin{path}", json=body)
        return response.json()
