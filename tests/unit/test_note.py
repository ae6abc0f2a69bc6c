"""C2SP signed notes, checkpoints, vkeys and cosignatures, checked against other implementations."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from msmt.core import errors
from msmt.core.merkle import EMPTY_ROOT
from msmt.core.note import (
    MAX_SIGNATURES,
    MLDSA65_NOTE,
    MLDSA65_NOTE_IDENTIFIER,
    Checkpoint,
    Ed25519Cosigner,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    MLDSA44CosignatureVerifier,
    MLDSA44Cosigner,
    MLDSA65NoteSigner,
    MLDSA65NoteVerifier,
    NoteSignature,
    cosignature_timestamp,
    cosignature_v1_message,
    format_note,
    format_vkey,
    is_valid_key_name,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    parse_signature_lines,
    parse_vkey,
    subtree_v1_message,
    verifier_from_vkey,
    verify_cosignatures,
)

# golang.org/x/mod/sumdb/note's tests (BSD-3-Clause): a key, its vkey and a note it signed.
PETER_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

# c2sp.org/signed-note's example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

# c2sp.org/tlog-checkpoint's and tlog-cosignature's example checkpoint and signed message.
SPEC_CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNED = b"cosignature/v1\ntime 1679315147\n" + SPEC_CHECKPOINT.encode()

# filippo.io/torchwood (BSD-3-Clause), cmd/litewitness/testdata/mldsa.txt: a log that signs its
# checkpoints with an ML-DSA-44 subtree/v1 cosignature (type 0x06, timestamp 0).
TORCHWOOD_VKEY = "example.com/mldsa-log+b5df45c5+BuhtcL97l3dcitjZ8Y9J54gmQ1TWn/BMF0yePKpTzhlFCkN6ouJDf+9kT9wve4/Y+JGXBUjlRvktAynZ6XOQSO+fOaxyPOQAwrtbZKYXnZWSQj9gHPz18q6brnckUv87Rsk/m5GIBvH8J3ymxZjUQS+DnAUIbctLsG2DD6I/ou0JtXpPLvfGhPDTkwc9QeFyBLBa02Pr9uuWCMohciLqRiFUo5+leUUDKba1g5TYjOjK/VKfntpdbEwoqhTJTG4armjUeXdrYDHeaaMaCAnW5F0lMWYsHjqzRpKjeTjgItseaWKSm+ga/mzTAgqsbo5Ob/AwaXf4Av7/mN+ZM6vHON/NE7Ip5vpXpCiNb9YbEQavn+fjNucFxffCacvzXghvaaQ+3C/5h5lpR8jeajBFsFIOvdkYKizt29lCjqZDkYQgVfB9nWeH6rbayMkBdDpmRH03cI+urD0Eb5zvRuGJn3PgfwdyQJ3WcDH5Gqn5dkKs5NIVMBC+FfKeD47ruAIruda4JiiYCAxZbWgwzTI80N5lZFHEndmxKWaw6z/QyphuYkNyvZVZ0R3kH3JN4jdy9KKpNtFoQqnoBTGeEE/fXEEs5ByPlKnrrefRgWTqxssE4nPzHHr5GGgv/NKNTXNKI4LvNPH5yO3Vv/gIiDZxPPc1Jen8uKkmc0s3kT7XtcuWTlb+zdQeSme9ODj0IoVu29Eav2OsGJpReX7vZx9i2fVfHEMHY5nFew8L5RxcWmZFFiYhMFZnLvk/SWmHcwr3DhzZchrODhabHQ+S6S49Ws+5aoBBPM3mOrSSKHgobdI7BJrdzdT07kjzyiyS9Gyv8iylUHHMuuh1O05RNRcX5SXmenwGDPcT9HuLS+hoesO0FQgEt+jAR7vVyUUU2C6g6FC6QNfHL/EUsulvYIAS5fOK7acOeVnoJlpI57Bq+uzLZm6g7IZD0xxQwZPYyT4ek99l9HxDSrVnU0rAr+Tq5vVh5YxvDkQVWroYIWek/AI5awjmhgpW4LPapBhLk2ipkF5CmU3T0cm3ET5f14gYQZfz23nCsmZ7qyqiQilgOxJzVYacVoGAStGzJNY1wEf26MADW5McyQzYI/3Fpaa4Ay6p2yFmcJMfpqZnu4flgWMqN1UpMbbJ6I7hOrCFWryExK/nvSbRrErHTkPz2wvVfI+enbFz86c0iNb7naQKv6LoIZYEHFOCEsWGL/sCChn6BR4nk1qAakyXEQwi96CkIa3AX562F8lhw6CU4x7T+NWqi2AWfEXImJenORhMP69hGIFsiLAVIjHtsWtJOi8cu+Brg1bFERkB4ryUTrLf/jFeb6KifZ+s8PZWclDaOLMINZ3E78a5u6AzgXpigJsAJ1A4BY89muedrW2O8kFyh3TTTKyY4kedCW6L+8bFHV2Gce25ZulNC1mZs41XAI9CteeYaWaiL7uGMXgyQ73wr4ftwAEMdsoQVQsQriutS1AhpBGvjzPCwD5LC5p1fa0WXBQ1puuaNqr3IJodmDLhEIAsZcv1gdXMg8EQg9QLqgLLrBijU3GxFUQllS8lpQ4TLwFYUJ41+qt28JEeky/VzSEeQd/qob8cbyNM44o7INB+lbhEXEGWvVO8Ak+uWMY+PRKeY9OQcE6E27Nf3eUoHQXkwmXkjGgj0NKeXBIJc1k/Ws6WDbsU4graVKk5FQjwULcRngOpyiJQ/n8sObkAPXr+1rImK3lQJnxif/B6p5/tsh4rrcUht4yVIvFAaqsgAAE="
TORCHWOOD_NOTE = (
    "example.com/mldsa-log\n"
    "1\n"
    "+zoErtsZtGO6sfiSV/v4UJSIyowisE8hvjw0q5+bD38=\n"
    "\n"
    "— example.com/mldsa-log td9FxQAAAAAAAAAAkjFvCxC6244QGemHL0hurmk5M3Hj6noQQtBM1TiwnC1lFmT+t+cUG9W0ENlRQtV20lJFLKCzoJ08ulQEkfiVueKHeMyURh97Iup0R9d41Monv472jkyfDoX3ILyX/kEOuSV4Ed2tU4VmtDSbP0rofMWAbKJRMnzCpNIT5xMe3tRbWLVTvAtnX9OB4UMKL1dvGS/uuhqW9Ddjik2D8veitBvk3TbQcT8fanSyZqCbDZ5zzw5JS3Gu5oD1zK7z+KiyqbzKUhglESs7YXFbeU0E03FrXdAPYS6GAuZtBWTJp4DEm4rL+NqU6Xp0n2ehhqd1rFAJUAcsE5CFakQdlmKkkzVMy3VZYll5ptS0amlYfGqX6/N9bJAYdAoWWpdgCep5eXCutQcTQXc69UocKT99/vholeAP1097GfS+hNL2ndNS2ieMnj8XLD1LCHVoBjKZUIObB0lx3leGRe9VjYgTRAY2WlE+K32b6Iz1rKzzDD8YBNQdkHgdx44uPOU3I+8szYS6NzQ2Z0QlqAtz0j9vZu9yEUUxCEORAiMAHLtV5oWZ/RvSE7qq5B0b8WrHGPGoR/qUNK4ECmlIe/SRo6M7yRrPs3das3ox1bkC3f92c98ewHLeQtLwwsqQJny6rlYaiaiPMxgdT2CVcJEcKOfaK8pdy2fucBDxHrQitpGkeLJLmWk6LLxR/Ut6s6xNyyKSuZlVslS40n9MJ837uMmJFyecKPliwAj8HzTWQywSkMpEQfJyr4i2Kfa2paOZ4izmotRTfdvbFWlWFwuGLWOQ0X/pKaExpdNDwqahAwbfGkw/iHbsV7ZIlNIuSNs2ccQvnjM8xqkT6sYYVxYiHpmk5sOwGsdeiMdwQqn7Q/Lz+uc3F6k/r0Ox7MJTX6fPhFdhe8RJg/77USR/MIGiT4YZHV+XgrtbV0jvMEgB4yEOircsScaBmLv18tTn1GiGlzFjK/s7gOzjk70jf1qCZ1MNgDAPstd/5sXdwYON0FnA5zPUp9yMkq1/wZq+DuePQDT6nj8zgFrkrvl8s7nibKKaL2bKcje5YP3CFcXLZoESZnC3BJkV85VqXlAKl+dctM3vNfMVrqk3/boBARw27mdKLsysIREkWR4caByW0csjL3Js9tn1hB0yf6hIGo8mvPIUjPIXn1rFSSKWkQlq15wu2gwEo9FdVF5beMdF4LVwuO9PZ1Y4oXuRE2pIzMWq/jEzHAZ7GucP7yzU78X767ucrwO/AXjMlLUsLLFZaQcHHBsrQJLpy5w1Jn/L7XFyR2g0lBOdT+lSOhx7j33oIlzxmqdR47ovtkg+LJpbAJG7n/JiQ/h/xffe3VdqSsrB8S4ltKz+rq51swoZ59zmRzWaoNkyWX0eu0E7y6EfpfrKEmr0H+fYtVnJvCznWFKzbv7oDXKC0pOyKZsNctvFwhSGEEURCs1G+4IrAEWG2Y231thQ8HdMvaMcm+ocvBGhZjmE7bXFkdiJ7S09csFjljFDGCiGRiU+flxkyiqpa1DDgeFRWOEyNAdMeY2iQMTJU9ApqNVrPpjGbg7kL0HrfKCQM236d16DKfXIiUmZw/NONKnrliAIs6/WSzKdW/JUyTLiKfPV1ItODmw5eNz7lV36dR8g3us/bpWp4OaDIInrLxYZRfkLHLvXGGg5ogY2k/FMno/3UBbS0QfstK+ByB/pFVYCHWgDjctwpOHaqAAXAiWHAUh1KOpXBMv8qndpzhsYhvKbrL371aBST0e3iPW/K4x+kFfgdeClsftS9RnE8KDCf4Uz+9QMP9sxj4+ZACztE19eBVaSvCqv54wO6n5248UzbqPXzA1dweKQziw/FnPWC7qMrcs3jDi6PBPhpruk1xBy08MQg58l4YzuXrPm5gAyiUAyfNszvhTotaU02oljhvg24CycDo/2PvQY7sBmisIsVVeHssiRxg23CMgWHaPMDn6OM+IhF2xaAqJOjfnsFBWlvMg8LxsrBnOQ1YABVLLtMvCSaIvgBjPt8XtLn9gZ0HL9OvGsR3efWHTR5p4nZyuHH2Nm8F3nWKVkEI4p4H6Yo5O0hkzCi1ZB7QT3uEIeR0Hq3g/bLTzmm6XzsjWSmQ8CtPapmXX476QT44wU0CWJ096SqUGUq2ZCDg3kFkV0BuKPIfLCt4sYK9bjj8UZCqkhyHbVm2x+HQwk8mNnDbUd7PK89riPjA33KX0Sw32RE0uKtB0sC8m7t028aEupsRx56/M0jBgeYmEHuRrXpW9nuOkQPTBaHdmYBHNkzTF2arPzZK3diFuhKPvmSQh2CN6g8r0p3EN+dmps1fIUfHM6emkEuaod+ZG83vyJsyd5B2oPMTVP12z8VJtDRAYfA5bRj+HEw2aD4f23u/Zq3PHk2C9T5LTAu28WCuO/EpXGSIkq1/hRpyE0qhJSnPN9/iE74PoU1OgjGBv6uSUsNhNZJeMe2W23s8EAyStB5+u83IBgUctrGwXzNdoC9LY1p+kNFSAZXIggNB3alVzoS+D9rcCYTUAafpkdwLaYq5/w0wRchljkG61rl+gZCiwtqZv3SHVxO7kRTAzfHsGDB1yc/9Sz++IMGyFHYvuqtclhpHPPToFByaVl687b1P4t2i/U4fWPZ4BBhN5Q7HGTxubspw1GY2MjBYU5OXvEJu9aWeibkM/fg6QrxPRYNsJBNJQRywMjYHj6AefrZeGXGxSNgS50kCNBvV7XTli/17y3MFgR4WfNmBK3BqKb87v3DBMVnLHcqvw1ZVjFPv91q0XYaDdVFHqOnS4Fh5nfwh1qfuvKrUZlwFPcwW+pG4YDyjx90MTFugpQ6KfEusmUhB5Dqr79nYWbOhW3e0PCEZtxmVrH9EtCHEgO6wnkWjPke6XULARu0ECF1gZvQczEjKfzxCt6Rknz+27lXyzgzRyHWxr0kB/pFty+8IebrDfIW9757d+1QLonDTmkLQiirF0ygsgQALmk1KljcHD/qiAZPHh5YX+Q2VdDfIfGeMXmCg3nX5r5DINcx47fNHtgWeGn8MjF8Hnff6x+ZU/7YqcBrDOvGqn46FBvuRY0+mWkRo576207vQR/023owl7pXZ5p/75V5yDkTZWDtXsfKjpypcxrWIBsg5GC25nZdjQQGBtFUF1pfn+xvunq9AEIFidYY2Vyc3mYw8TW7PkVKis5PENhdbfJHDtIdIiQsLe+1Nr+/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA4eKDU=\n"
)

ORIGIN = "broker.example/log"
ROOT = hashlib.sha256(b"some root").digest()


def seed(label: str, size: int = 32) -> bytes:
    return hashlib.shake_256(f"msmt note test {label}".encode()).digest(size)


@pytest.fixture(scope="module")
def log_signers() -> tuple[Ed25519NoteSigner, MLDSA65NoteSigner]:
    return (
        Ed25519NoteSigner.from_seed(ORIGIN, seed("log ed25519")),
        MLDSA65NoteSigner.from_seed(ORIGIN, seed("log mldsa65")),
    )


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    return Checkpoint(ORIGIN, 1234, ROOT)


def signed(text: str, *signers: Ed25519NoteSigner | MLDSA65NoteSigner) -> bytes:
    return format_note(text, [s.sign(text) for s in signers])


# --- keys, key IDs, vkeys ------------------------------------------------------------------


def test_fixed_ed25519_key_has_the_reference_key_id_and_vkey() -> None:
    signer = Ed25519NoteSigner.from_seed("PeterNeumann", PETER_SEED)
    assert signer.verifier.key_id == 0xC74F20A3
    assert signer.verifier.vkey == PETER_VKEY
    assert verifier_from_vkey(PETER_VKEY) == signer.verifier
    public = ed25519.Ed25519PrivateKey.from_private_bytes(PETER_SEED).public_key().public_bytes_raw()
    assert key_id("PeterNeumann", b"\x01" + public) == 0xC74F20A3
    assert format_vkey("PeterNeumann", b"\x01" + public) == PETER_VKEY
    parsed = parse_vkey(PETER_VKEY)
    assert (parsed.name, parsed.key_id, parsed.type_and_key) == ("PeterNeumann", 0xC74F20A3, b"\x01" + public)
    assert str(parsed) == PETER_VKEY


def test_signing_matches_the_go_reference_byte_for_byte() -> None:
    signer = Ed25519NoteSigner.from_seed("PeterNeumann", PETER_SEED)
    assert signed(GO_TEXT, signer) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_the_signed_note_spec_example_verifies() -> None:
    text, sigs = open_note(SPEC_NOTE.encode(), [verifier_from_vkey(SPEC_VKEY)])
    assert text == "This is an example message.\n"
    assert [(s.name, s.key_id) for s in sigs] == [("example.com/foo", 0x530D903A)]


def test_every_mangled_vkey_is_refused() -> None:
    raw = PETER_VKEY.encode()
    for i in range(len(raw)):
        mangled = bytearray(raw)
        mangled[i] += 1
        with pytest.raises(errors.MalformedVerifierKey):
            verifier_from_vkey(mangled.decode())
    for i in range(len(raw)):
        for j in range(i + 1, len(raw) + 1):
            if (i, j) != (0, len(raw)):
                with pytest.raises(errors.MalformedVerifierKey):
                    verifier_from_vkey(PETER_VKEY[i:j])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # uppercase hex
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # bad base64
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        format_vkey("PeterNeumann", b"\x01" + b"\x00" * 31),  # short Ed25519 key, matching key ID
        format_vkey("PeterNeumann", b"\x02" + b"\x00" * 32),  # unsupported type, matching key ID
        format_vkey("PeterNeumann", b"\x06" + b"\x00" * 32),  # ML-DSA-44 key of the wrong length
    ],
)
def test_malformed_vkeys(vkey: str) -> None:
    with pytest.raises(errors.MalformedVerifierKey) as caught:
        verifier_from_vkey(vkey)
    assert caught.value.code == "malformed-verifier-key"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/log", True),
        ("PeterNeumann", True),
        ("oid/1.3.6.1.4.1.44363.47.1", True),
        ("ünïcode.example", True),
        ("", False),
        ("a b", False),
        ("a+b", False),
        ("a\tb", False),
        ("a\u00a0b", False),
        ("a\u3000b", False),
        ("a\u2028b", False),
        ("a\x01b", False),
        ("a\ud800b", False),
    ],
)
def test_key_name_rules(name: str, valid: bool) -> None:
    assert is_valid_key_name(name) is valid


# --- note format -----------------------------------------------------------------------------


def test_parse_and_format_round_trip() -> None:
    text = "first line\n\nafter a blank line — with an em dash, ünïcode\n"
    sigs = [NoteSignature("a.example/x", 1, b"\x01\x02"), NoteSignature("b", 0xFFFFFFFF, b"\xff" * 100)]
    note = format_note(text, sigs)
    assert parse_note(note) == (text, sigs)
    assert parse_signature_lines("".join(s.to_line() for s in sigs)) == sigs


def _bad(note: str | bytes) -> bytes:
    return note if isinstance(note, bytes) else note.encode()


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(GO_TEXT, id="no signatures"),
        pytest.param(GO_TEXT + "\n", id="blank line, no signature"),
        pytest.param(GO_TEXT + PETER_SIG, id="missing blank line"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG[:-1], id="no final newline"),
        pytest.param("\x01" + GO_TEXT + "\n" + PETER_SIG, id="control character"),
        pytest.param(GO_TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG, id="carriage return"),
        pytest.param("a\tb\n\n" + PETER_SIG, id="tab"),
        pytest.param(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), id="invalid UTF-8"),
        pytest.param(b"caf\xc3\n\n" + PETER_SIG.encode(), id="truncated UTF-8"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("—", "-"), id="hyphen instead of em dash"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("—", "\u2013"), id="en dash instead of em dash"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("— ", "—"), id="no space after the em dash"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter Neumann"), id="space in name"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"), id="plus in name"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann ", " "), id="empty name"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("x08go", "x08g*"), id="bad base64"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("AM=\n", "AM\n"), id="missing padding"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("AM=\n", "AN=\n"), id="non-canonical base64"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG.replace("\n", " \n"), id="trailing space"),
        pytest.param(GO_TEXT + "\n— PeterNeumann x08gow==\n", id="signature of 0 bytes after the key ID"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n", id="not a signature line"),
        pytest.param(GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), id="too many signatures"),
    ],
)
def test_malformed_notes(note: str | bytes) -> None:
    verifier = verifier_from_vkey(PETER_VKEY)
    with pytest.raises(errors.MalformedNote) as caught:
        open_note(_bad(note), [verifier])
    assert caught.value.code == "malformed-note"
    assert isinstance(caught.value, errors.LogError)


def test_at_least_sixteen_signatures_are_accepted() -> None:
    assert MAX_SIGNATURES >= 16
    others = "".join(f"— other{i}.example/w {base64.b64encode(bytes(5000)).decode()}\n" for i in range(15))
    text, sigs = open_note((GO_TEXT + "\n" + others + PETER_SIG).encode(), [verifier_from_vkey(PETER_VKEY)])
    assert text == GO_TEXT
    assert [s.name for s in sigs] == ["PeterNeumann"]
    many = GO_TEXT + "\n" + PETER_SIG * MAX_SIGNATURES
    assert len(parse_note(many.encode())[1]) == MAX_SIGNATURES


@pytest.mark.parametrize(
    ("text", "sigs"),
    [
        ("no final newline", [NoteSignature("a", 1, b"x")]),
        ("control \x07\n", [NoteSignature("a", 1, b"x")]),
        ("fine\n", []),
        ("fine\n", [NoteSignature("a", 1, b"x")] * (MAX_SIGNATURES + 1)),
        ("fine\n", [NoteSignature("a b", 1, b"x")]),
        ("fine\n", [NoteSignature("a", 2**32, b"x")]),
        ("fine\n", [NoteSignature("a", 1, b"")]),
    ],
)
def test_format_note_refuses_what_parse_would_refuse(text: str, sigs: list[NoteSignature]) -> None:
    with pytest.raises(errors.MalformedNote):
        format_note(text, sigs)


# --- verification rules ------------------------------------------------------------------------


def test_unknown_keys_are_ignored_known_ones_verified() -> None:
    peter, enoch = verifier_from_vkey(PETER_VKEY), verifier_from_vkey(ENOCH_VKEY)
    note = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    assert [s.name for s in open_note(note, [peter])[1]] == ["PeterNeumann"]
    assert [s.name for s in open_note(note, [peter, enoch])[1]] == ["PeterNeumann", "EnochRoot"]
    assert [s.name for s in open_note(note, [enoch])[1]] == ["EnochRoot"]
    # Same name, other key ID (and the reverse): an unknown key, ignored.
    impostor = Ed25519NoteSigner.from_seed("PeterNeumann", seed("impostor"))
    with pytest.raises(errors.UnverifiedNote) as caught:
        open_note(note, [impostor.verifier])
    assert caught.value.code == "unverified-note"
    # Repeated lines by one key count once.
    assert len(open_note((GO_TEXT + "\n" + PETER_SIG * 3).encode(), [peter])[1]) == 1


def test_a_note_without_a_known_valid_signature_is_rejected() -> None:
    note = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    with pytest.raises(errors.UnverifiedNote):
        open_note(note, [])
    with pytest.raises(errors.UnverifiedNote):
        open_note(note, [Ed25519NoteSigner.from_seed("someone", seed("someone")).verifier])


def test_a_bad_signature_from_a_known_key_rejects_the_note() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[64:]
    note = (GO_TEXT + "\n" + ENOCH_SIG + bad).encode()
    with pytest.raises(errors.BadNoteSignature) as caught:
        open_note(note, [verifier_from_vkey(PETER_VKEY), verifier_from_vkey(ENOCH_VKEY)])
    assert caught.value.code == "bad-note-signature"
    # The same line is harmless when its key is unknown.
    assert open_note(note, [verifier_from_vkey(ENOCH_VKEY)])[1][0].name == "EnochRoot"
    # Another text under a valid signature.
    with pytest.raises(errors.BadNoteSignature):
        open_note((GO_TEXT.upper() + "\n" + PETER_SIG).encode(), [verifier_from_vkey(PETER_VKEY)])


def test_two_different_keys_with_one_name_and_key_id_are_a_configuration_error() -> None:
    peter = verifier_from_vkey(PETER_VKEY)
    clone = Ed25519NoteVerifier("PeterNeumann", bytes(32))
    object.__setattr__(clone, "key_id", peter.key_id)
    with pytest.raises(ValueError, match="two different keys"):
        open_note((GO_TEXT + "\n" + PETER_SIG).encode(), [peter, clone])
    assert open_note((GO_TEXT + "\n" + PETER_SIG).encode(), [peter, verifier_from_vkey(PETER_VKEY)])


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_round_trips() -> None:
    spec = Checkpoint.parse(SPEC_CHECKPOINT)
    assert (spec.origin, spec.size) == ("example.com/behind-the-sofa", 20852163)
    assert spec.to_text() == SPEC_CHECKPOINT
    for cp in (
        Checkpoint("o", 0, EMPTY_ROOT),
        Checkpoint("ünïcode origin with spaces", 2**63 - 1, ROOT),
        Checkpoint(ORIGIN, 7, ROOT, ("ext one", "ext — two")),
    ):
        assert Checkpoint.parse(cp.to_text()) == cp


NONCANONICAL_ROOT = (
    base64.b64encode(ROOT).decode()[:-2] + chr(ord(base64.b64encode(ROOT).decode()[-2]) ^ 1) + "="
)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SPEC_CHECKPOINT[:-1], id="no final newline"),
        pytest.param("example.com/x\n5\n", id="two lines"),
        pytest.param("\n5\n" + base64.b64encode(ROOT).decode() + "\n", id="empty origin"),
        pytest.param("a\x01b\n5\n" + base64.b64encode(ROOT).decode() + "\n", id="control char in origin"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n020852163"), id="leading zero"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n00"), id="double zero"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n+5"), id="plus sign"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n-1"), id="negative"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n 5"), id="space"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n1_000"), id="underscore"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n\u0665"), id="arabic-indic digit"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n0x10"), id="hex"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n"), id="empty size"),
        pytest.param(SPEC_CHECKPOINT.replace("\n20852163", "\n9223372036854775808"), id="size 2^63"),
        pytest.param(SPEC_CHECKPOINT.replace("2I=", "2I"), id="root without padding"),
        pytest.param(SPEC_CHECKPOINT.replace("CsUY", "CsU*"), id="root bad base64"),
        pytest.param(f"o\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", id="root of 31 bytes"),
        pytest.param(f"o\n5\n{NONCANONICAL_ROOT}\n", id="non-canonical root"),
        pytest.param(SPEC_CHECKPOINT + "\n", id="empty extension line"),
        pytest.param(SPEC_CHECKPOINT.replace("\n", "\r\n"), id="CRLF"),
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(errors.MalformedCheckpoint) as caught:
        Checkpoint.parse(text)
    assert caught.value.code == "malformed-checkpoint"


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, ROOT, ()),
        ("o\nx", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**63, ROOT, ()),
        ("o", 1, b"x", ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoint_fields_are_checked(fields: tuple[str, int, bytes, tuple[str, ...]]) -> None:
    with pytest.raises(errors.MalformedCheckpoint):
        Checkpoint(*fields)


# --- the log's two signatures ------------------------------------------------------------------


def test_mldsa65_note_type_key_id_and_signature(
    log_signers: tuple[Ed25519NoteSigner, MLDSA65NoteSigner],
) -> None:
    _, pq = log_signers
    public = pq.private_key.public_key().public_bytes_raw()
    assert MLDSA65_NOTE == b"\xff" + MLDSA65_NOTE_IDENTIFIER == b"\xffmsmt/ml-dsa-65/note/v1"
    expected_id = int.from_bytes(
        hashlib.sha256(ORIGIN.encode() + b"\n\xff" + MLDSA65_NOTE_IDENTIFIER + public).digest()[:4]
    )
    assert pq.verifier.key_id == expected_id
    vkey = pq.verifier.vkey
    assert vkey == f"{ORIGIN}+{expected_id:08x}+{base64.b64encode(MLDSA65_NOTE + public).decode()}"
    assert verifier_from_vkey(vkey) == pq.verifier
    assert isinstance(verifier_from_vkey(vkey), MLDSA65NoteVerifier)
    text = "hello\n"
    line = pq.sign(text)
    # FIPS 204 ML-DSA-65 over the note text, the identifier as context.
    key = mldsa.MLDSA65PublicKey.from_public_bytes(public)
    key.verify(line.signature, text.encode(), MLDSA65_NOTE_IDENTIFIER)
    assert pq.verifier.verify(text.encode(), line.signature)
    assert not pq.verifier.verify(b"hellO\n", line.signature)
    assert not pq.verifier.verify(text.encode(), pq.private_key.sign(text.encode()))  # no context
    assert not pq.verifier.verify(text.encode(), line.signature[:-1])


def test_a_checkpoint_needs_both_log_signatures(
    log_signers: tuple[Ed25519NoteSigner, MLDSA65NoteSigner], checkpoint: Checkpoint
) -> None:
    ed, pq = log_signers
    verifiers = [ed.verifier, pq.verifier]
    text = checkpoint.to_text()
    note = signed(text, ed, pq)
    opened, lines = open_checkpoint(note, verifiers, origin=ORIGIN)
    assert opened == checkpoint
    assert len(lines) == 2
    for partial in (signed(text, ed), signed(text, pq)):
        with pytest.raises(errors.UnverifiedNote):
            open_checkpoint(partial, verifiers)
        assert open_note(partial, verifiers)[0] == text  # without require_all, one suffices
    with pytest.raises(errors.MalformedCheckpoint):
        open_checkpoint(note, verifiers, origin="other.example/log")
    with pytest.raises(errors.MalformedCheckpoint):
        open_checkpoint(signed("not a checkpoint\n", ed, pq), verifiers)
    forged = note.replace(b"\n1234\n", b"\n1235\n")
    with pytest.raises(errors.BadNoteSignature):
        open_checkpoint(forged, verifiers)


def test_signers_refuse_malformed_text(log_signers: tuple[Ed25519NoteSigner, MLDSA65NoteSigner]) -> None:
    for signer in log_signers:
        with pytest.raises(errors.MalformedNote):
            signer.sign("no newline")
        with pytest.raises(errors.MalformedNote):
            signer.sign("bell \x07\n")


# --- cosignatures ------------------------------------------------------------------------------


def test_ed25519_cosignature_signs_the_spec_message() -> None:
    cosigner = Ed25519Cosigner.from_seed("witness.example.com/w1", seed("w1"))
    spec = Checkpoint.parse(SPEC_CHECKPOINT)
    assert cosignature_v1_message(SPEC_CHECKPOINT, 1679315147) == SPEC_COSIGNED
    line = cosigner.cosign(spec, 1679315147)
    assert len(line.signature) == 8 + 64
    assert line.signature[:8] == struct.pack(">Q", 1679315147)
    cosigner.private_key.public_key().verify(line.signature[8:], SPEC_COSIGNED)
    public = cosigner.private_key.public_key().public_bytes_raw()
    assert line.key_id == int.from_bytes(
        hashlib.sha256(b"witness.example.com/w1\n\x04" + public).digest()[:4]
    )
    assert cosigner.verifier.vkey.startswith("witness.example.com/w1+")
    assert verifier_from_vkey(cosigner.verifier.vkey) == cosigner.verifier
    assert cosigner.verifier.verify_cosignature(spec, line.signature) == 1679315147
    assert cosignature_timestamp(line) == 1679315147


def test_ed25519_cosignature_covers_extension_lines() -> None:
    cosigner = Ed25519Cosigner.from_seed("w", seed("w"))
    with_ext = Checkpoint(ORIGIN, 5, ROOT, ("ext",))
    line = cosigner.cosign(with_ext, 10)
    assert cosigner.verifier.verify_cosignature(with_ext, line.signature) == 10
    with pytest.raises(errors.BadCosignature):
        cosigner.verifier.verify_cosignature(Checkpoint(ORIGIN, 5, ROOT), line.signature)


@pytest.mark.parametrize("kind", ["ed25519", "mldsa44"])
def test_cosignature_over_another_checkpoint_or_time_fails(kind: str, checkpoint: Checkpoint) -> None:
    cosigner: Ed25519Cosigner | MLDSA44Cosigner = (
        Ed25519Cosigner.from_seed("w.example/1", seed("w1"))
        if kind == "ed25519"
        else MLDSA44Cosigner.from_seed("w.example/1", seed("w1"))
    )
    verifier = cosigner.verifier
    line = cosigner.cosign(checkpoint, 1_700_000_000)
    assert verifier.verify_cosignature(checkpoint, line.signature) == 1_700_000_000
    others = [
        Checkpoint(ORIGIN, checkpoint.size + 1, ROOT),
        Checkpoint(ORIGIN, checkpoint.size, hashlib.sha256(b"other").digest()),
        Checkpoint("other.example/log", checkpoint.size, ROOT),
    ]
    for other in others:
        with pytest.raises(errors.BadCosignature) as caught:
            verifier.verify_cosignature(other, line.signature)
        assert caught.value.code == "bad-cosignature"
    later = struct.pack(">Q", 1_700_000_001) + line.signature[8:]
    with pytest.raises(errors.BadCosignature):
        verifier.verify_cosignature(checkpoint, later)
    with pytest.raises(errors.BadCosignature):
        verifier.verify_cosignature(checkpoint, line.signature[:-1])
    with pytest.raises(errors.BadCosignature):
        verifier.verify_cosignature(checkpoint, struct.pack(">Q", 2**63) + line.signature[8:])
    # Through the note interface: the note text must be the checkpoint.
    assert verifier.verify(checkpoint.to_text().encode(), line.signature)
    assert not verifier.verify(others[0].to_text().encode(), line.signature)
    assert not verifier.verify(b"not a checkpoint\n", line.signature)


def test_mldsa44_cosignature_signs_the_spec_cosigned_message(checkpoint: Checkpoint) -> None:
    cosigner = MLDSA44Cosigner.from_seed("example.com/pq", seed("pq"))
    message = subtree_v1_message("example.com/pq", 1679315147, ORIGIN, 0, checkpoint.size, ROOT)
    expected = (
        b"subtree/v1\n\x00"
        + bytes([14])
        + b"example.com/pq"
        + (1679315147).to_bytes(8, "big")
        + bytes([len(ORIGIN)])
        + ORIGIN.encode()
        + (0).to_bytes(8, "big")
        + checkpoint.size.to_bytes(8, "big")
        + ROOT
    )
    assert message == expected
    line = cosigner.cosign(checkpoint, 1679315147)
    assert len(line.signature) == 8 + 2420
    public = cosigner.private_key.public_key()
    public.verify(line.signature[8:], expected)  # FIPS 204, empty context
    raw = public.public_bytes_raw()
    assert line.key_id == int.from_bytes(hashlib.sha256(b"example.com/pq\n\x06" + raw).digest()[:4])
    assert verifier_from_vkey(cosigner.verifier.vkey) == cosigner.verifier
    assert isinstance(verifier_from_vkey(cosigner.verifier.vkey), MLDSA44CosignatureVerifier)


def test_mldsa44_cosignature_does_not_cover_extension_lines() -> None:
    cosigner = MLDSA44Cosigner.from_seed("example.com/pq", seed("pq"))
    plain = Checkpoint(ORIGIN, 5, ROOT)
    line = cosigner.cosign(plain, 1)
    with pytest.raises(errors.BadCosignature):
        cosigner.cosign(Checkpoint(ORIGIN, 5, ROOT, ("ext",)), 1)
    with pytest.raises(errors.BadCosignature):
        cosigner.verifier.verify_cosignature(Checkpoint(ORIGIN, 5, ROOT, ("ext",)), line.signature)


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, "o", 0, 1, ROOT),
        ("n" * 256, 1, "o", 0, 1, ROOT),
        ("n", 1, "o" * 256, 0, 1, ROOT),
        ("n", 2**63, "o", 0, 1, ROOT),
        ("n", 1, "o", 1, 2, ROOT),  # a subtree with start > 0 has timestamp 0
        ("n", 0, "o", 2, 1, ROOT),
        ("n", 1, "o", 0, 1, ROOT[:31]),
    ],
)
def test_subtree_message_bounds(args: tuple[str, int, str, int, int, bytes]) -> None:
    with pytest.raises(errors.BadCosignature):
        subtree_v1_message(*args)
    assert len(subtree_v1_message("n" * 255, 0, "o" * 255, 3, 5, ROOT)) == 12 + 256 + 8 + 256 + 16 + 32


def test_torchwood_mldsa44_checkpoint_verifies() -> None:
    verifier = verifier_from_vkey(TORCHWOOD_VKEY)
    assert isinstance(verifier, MLDSA44CosignatureVerifier)
    assert verifier.key_id == 0xB5DF45C5
    assert verifier.vkey == TORCHWOOD_VKEY
    checkpoint, lines = open_checkpoint(TORCHWOOD_NOTE.encode(), [verifier], origin="example.com/mldsa-log")
    assert checkpoint.size == 1
    assert verify_cosignatures(checkpoint, lines, [verifier]) == {"example.com/mldsa-log": 0}
    forged = TORCHWOOD_NOTE.replace("\n1\n", "\n2\n").encode()
    with pytest.raises(errors.BadNoteSignature):
        open_checkpoint(forged, [verifier])


def test_checkpoint_with_log_signatures_and_a_quorum_of_cosignatures(
    log_signers: tuple[Ed25519NoteSigner, MLDSA65NoteSigner], checkpoint: Checkpoint
) -> None:
    ed, pq = log_signers
    witnesses = [
        MLDSA44Cosigner.from_seed("kor.example/witness", seed("kor")),
        Ed25519Cosigner.from_seed("usa.example/witness", seed("usa")),
        MLDSA44Cosigner.from_seed("jpn.example/witness", seed("jpn")),
    ]
    stranger = MLDSA44Cosigner.from_seed("stranger.example/witness", seed("stranger"))
    text = checkpoint.to_text()
    lines = [ed.sign(text), pq.sign(text)] + [
        w.cosign(checkpoint, 1_700_000_000 + i) for i, w in enumerate(witnesses)
    ]
    lines.append(stranger.cosign(checkpoint, 5))
    note = format_note(text, lines)
    opened, found = open_checkpoint(note, [ed.verifier, pq.verifier], origin=ORIGIN)
    trusted = [w.verifier for w in witnesses]
    assert verify_cosignatures(opened, found, trusted) == {
        "kor.example/witness": 1_700_000_000,
        "usa.example/witness": 1_700_000_001,
        "jpn.example/witness": 1_700_000_002,
    }
    # A known witness's line over another checkpoint (here: its timestamp rewritten) fails.
    bad = NoteSignature(lines[3].name, lines[3].key_id, struct.pack(">Q", 1) + lines[3].signature[8:])
    with pytest.raises(errors.BadCosignature):
        verify_cosignatures(opened, [*found[:3], bad], trusted)
    # The witness protocol answers with signature lines only; they parse on their own.
    answer = "".join(w.cosign(checkpoint, 7).to_line() for w in witnesses)
    assert len(verify_cosignatures(checkpoint, parse_signature_lines(answer), trusted)) == 3
    # And a whole note with cosignatures verifies as a note for its cosigners alone.
    assert len(open_note(note, trusted, require_all=True)[1]) == 3


def test_error_codes() -> None:
    assert errors.LogError.code == "log-error"
    codes = {
        errors.InvalidInclusionProof: "invalid-inclusion-proof",
        errors.InvalidConsistencyProof: "invalid-consistency-proof",
        errors.InvalidProofRequest: "invalid-proof-request",
        errors.MalformedNote: "malformed-note",
        errors.MalformedCheckpoint: "malformed-checkpoint",
        errors.MalformedVerifierKey: "malformed-verifier-key",
        errors.BadNoteSignature: "bad-note-signature",
        errors.UnverifiedNote: "unverified-note",
        errors.BadCosignature: "bad-cosignature",
    }
    for cls, code in codes.items():
        assert issubclass(cls, errors.LogError)
        assert issubclass(cls, errors.MsmtError)
        assert cls.code == code
        assert cls("a sentence.").detail == "a sentence."
