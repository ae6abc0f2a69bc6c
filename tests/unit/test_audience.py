"""A broker's identity in tokens is its URL, normalised the same way by client and broker."""

from __future__ import annotations

import pytest

from broker.cli import own_url
from broker.settings import Settings
from msmt import ui
from msmt.auth import audience_of
from msmt.client import Client


@pytest.mark.parametrize(
    ("url", "identity"),
    [
        ("https://Broker.MSMT.example/", "https://broker.msmt.example"),
        ("https://broker.msmt.example:443", "https://broker.msmt.example"),
        ("http://127.0.0.1:80/", "http://127.0.0.1"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("HTTPS://broker.example:8443/msmt/", "https://broker.example:8443/msmt"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_one_identity_per_url(url: str, identity: str) -> None:
    assert audience_of(url) == identity


def test_the_client_names_the_broker_it_talks_to_by_default() -> None:
    from msmt.trust import TrustStore
    from tests.integration.conftest import _KEYS

    trust = TrustStore.__new__(TrustStore)
    trust.folder = None
    client = Client("https://Broker.example:443/", _KEYS["KOR"], trust=trust)
    assert client.audience == "https://broker.example"
    assert Client("https://broker.example", _KEYS["KOR"], trust=trust, audience="x").audience == "x"


def test_the_broker_setting_is_normalised_like_the_client_side() -> None:
    assert Settings(audience="HTTPS://Broker.example:443/").audience == "https://broker.example"
    assert Settings(audience="msmt-test").audience == "msmt-test"  # an opaque identity stays as given


def test_serve_takes_its_one_address_as_identity_and_refuses_to_guess() -> None:
    assert own_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert own_url("::1", 8000) == "http://[::1]:8000"
    for everywhere in ("0.0.0.0", "::"):
        with pytest.raises(ui.UserError, match="set MSMT_AUDIENCE"):
            own_url(everywhere, 8000)
