"""Errors raised by the client library."""

from __future__ import annotations

from typing import Any

from .core.errors import MsmtError


class ClientError(MsmtError):
    code = "client-error"


class BrokerError(ClientError):
    """The broker answered with an RFC 9457 problem."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        self.code = self.type.rsplit(":", 1)[-1] or f"http-{status}"
        super().__init__(f"{status} {self.code}: {problem.get('detail', '')}")


class BrokerUnavailable(ClientError):
    code = "broker-unavailable"


class SubmitPending(BrokerUnavailable):
    """A sealed item the broker has not acknowledged: it is kept in the outbox, and re-sending
    it (`Client.resend_pending()`, `msmt outbox send`) submits the same bytes, so it can never
    be stored twice. Never call `send()` again for the same report."""

    code = "submit-pending"

    def __init__(self, item_id: str, cause: str) -> None:
        self.item_id = item_id
        self.cause = cause
        super().__init__(
            f"item {item_id} is not acknowledged yet ({cause}); it is kept in the outbox and "
            "`msmt outbox send` re-sends the same bytes"
        )


class PolicyRefused(BrokerError):
    """Policy does not allow one or more recipients; `refusals` names every failed rule."""

    @property
    def refusals(self) -> dict[str, list[dict[str, str]]]:
        recipients: dict[str, list[dict[str, str]]] = self.problem.get("recipients", {})
        return recipients


class OriginatorControlled(ClientError):
    """The item carries ORCON: only its originator may pass it on."""

    code = "originator-controlled"
