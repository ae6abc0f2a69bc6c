"""Item ids: UUIDv7 (RFC 9562), unique and sortable by creation time."""

from __future__ import annotations

import re
import secrets
import time

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_item_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7: 48-bit Unix milliseconds, then 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= secrets.randbits(12) << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def is_item_id(text: object) -> bool:
    return isinstance(text, str) and _UUID7.fullmatch(text) is not None


def item_id_time_ms(item_id: str) -> int:
    return int(item_id.replace("-", "")[:12], 16)
