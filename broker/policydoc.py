"""Sharing policy as one human-reviewable TOML document, and the plan of a change.

Pure: parse, validate, render, turn into the evaluator's `PolicySnapshot`, and compare two
documents. The store reads and writes documents in `services/policy.py`.

    format = "msmt-policy-v1"
    ladder = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
    default_agreement = { ceiling = "RESTRICTED", topics = "*" }
    agreements = [
        { originator = "KOR", recipient = "USA", ceiling = "SECRET", topics = "*" },
    ]
    deny_rules = [
        { id = "no-cyber-to-nzl", recipient = "NZL", topics = ["cyber"], reason = "..." },
    ]

    [countries.KOR]
    name = "Republic of Korea"
    status = "active"
    accreditation = "SECRET"
    groups = []

    [quotas]                      # every member's quotas (docs/operations.md#quotas)
    requests_per_second = 100
    burst = 200
    long_polls = 20
    stored_bytes = "20 GiB"
    largest_envelope = "16 MiB"

    [quotas.countries.NZL]        # one member's own: any of the five
    long_polls = 4
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from msmt.core import Markings
from msmt.core.markings import COUNTRY_RE, RELEASABLE_RE, TLP_LEVELS, TOPIC_RE, TOPICS
from msmt.core.policy import Agreement, DenyRule, Member, PolicySnapshot, evaluate

FORMAT = "msmt-policy-v1"
LEVEL = r"^[A-Z][A-Z0-9_]{0,31}$"


class PolicyDocumentError(ValueError):
    """The document is not valid; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Topics = list[str] | Literal["*"]


PLAIN = r"^[^\x00-\x1f\x7f]+$"  # no NUL or control characters (PostgreSQL text cannot hold NUL)


class CountryDoc(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=PLAIN)
    status: Literal["active", "suspended"] = "active"
    accreditation: str = Field(pattern=LEVEL)
    groups: list[str] = Field(default_factory=list, max_length=64)


class DefaultAgreementDoc(_Strict):
    ceiling: str = Field(pattern=LEVEL)
    topics: Topics = "*"


class AgreementDoc(_Strict):
    originator: str = Field(pattern=r"^[A-Z]{3}$")
    recipient: str = Field(pattern=r"^[A-Z]{3}$")
    ceiling: str = Field(pattern=LEVEL)
    topics: Topics = "*"


class DenyRuleDoc(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    reason: str = Field(min_length=1, max_length=500, pattern=PLAIN)
    originator: str | None = None
    recipient: str | None = None
    classification_at_least: str | None = Field(default=None, pattern=LEVEL)
    topics: list[str] | None = None
    tlp: list[str] | None = None


# --- quotas ----------------------------------------------------------------------------------

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}
_SIZE_RE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?) ?(B|KiB|MiB|GiB|TiB)")
# No valid envelope is larger (header <= 1 MiB, ciphertext <= 64 MiB + 16, signatures and
# framing): the broker's default body limit for submissions, MSMT_MAX_ENVELOPE_BYTES.
LARGEST_ENVELOPE_LIMIT = 66 * MiB
MAX_QUOTA_BYTES = 1 << 62  # fits a BIGINT with room for the sum of a batch


def _to_bytes(value: Any) -> Any:
    """A byte size: a whole number of bytes, or a string such as "16 MiB" or "1.5 GiB"
    (binary units B, KiB, MiB, GiB, TiB)."""
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                f"{value!r} is not a size: give a whole number of bytes or a number and a unit "
                'of B, KiB, MiB, GiB or TiB, such as "16 MiB"'
            )
        exact = Fraction(match.group(1)) * _UNITS[match.group(2)]
        if exact.denominator != 1:
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(exact)
    return value


def size_text(size: int) -> str:
    """The size in the largest binary unit that divides it exactly: 16777216 -> "16 MiB"."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]} {unit}"
    return f"{size} B"


Bytes = Annotated[int, BeforeValidator(_to_bytes), Field(strict=True, ge=0, le=MAX_QUOTA_BYTES)]
Rate = Annotated[float, Field(strict=True, gt=0, le=1_000_000)]
Burst = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]
LongPolls = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
QUOTA_FIELDS = ("requests_per_second", "burst", "long_polls", "stored_bytes", "largest_envelope")


class QuotaOverrideDoc(_Strict):
    """One member's own quotas; a field left out is the `[quotas]` default."""

    requests_per_second: Rate | None = None
    burst: Burst | None = None
    long_polls: LongPolls | None = None
    stored_bytes: Bytes | None = None
    largest_envelope: Bytes | None = None


class QuotasDoc(_Strict):
    """Per-member quotas (docs/operations.md#quotas). The defaults stop one member from
    taking a broker's capacity, connections or disk, and stay well above what an agency's
    own clients do (the benchmarks' busiest member makes ~35 requests per second)."""

    # each member's requests, refilling a bucket of `burst` (per broker process)
    requests_per_second: Rate = 100.0
    burst: Burst = 200
    # inbox long-polls waiting at once (per broker process)
    long_polls: LongPolls = 20
    # bytes of envelopes the member originated and the broker still stores (not purged)
    stored_bytes: Bytes = 20 * GiB
    # the largest envelope the member may submit (the protocol allows up to 64 MiB of payload)
    largest_envelope: Bytes = 16 * MiB
    countries: dict[str, QuotaOverrideDoc] = Field(default_factory=dict, max_length=1000)

    def normalized(self) -> QuotasDoc:
        """Overrides in code order, those that set nothing dropped."""
        return self.model_copy(
            update={
                "countries": {
                    code: override
                    for code, override in sorted(self.countries.items())
                    if override.model_dump(exclude_none=True)
                }
            }
        )

    def for_member(self, code: str) -> dict[str, Any]:
        """The member's five quotas: its override's, else the defaults."""
        override = self.countries.get(code)
        own = override.model_dump(exclude_none=True) if override is not None else {}
        return {name: own.get(name, getattr(self, name)) for name in QUOTA_FIELDS}


def _quota_problems(quotas: QuotasDoc, countries: dict[str, CountryDoc]) -> list[str]:
    problems = []
    tables = [("quotas", quotas.model_dump(include=set(QUOTA_FIELDS)))] + [
        (f"quotas.countries.{code}", override.model_dump(exclude_none=True))
        for code, override in quotas.countries.items()
    ]
    for where, values in tables:
        largest = values.get("largest_envelope")
        if largest is not None and not 1 <= largest <= LARGEST_ENVELOPE_LIMIT:
            problems.append(
                f"{where}.largest_envelope: {size_text(largest)} is outside 1 B .. {size_text(LARGEST_ENVELOPE_LIMIT)} "
                f"(the broker's body limit for submissions, MSMT_MAX_ENVELOPE_BYTES: no valid envelope is larger)"
            )
    for code in quotas.countries:
        if code not in countries:
            problems.append(f"quotas.countries.{code}: {code} is not in countries")
    return problems


class PolicyDocument(_Strict):
    format: Literal["msmt-policy-v1"] = "msmt-policy-v1"
    ladder: list[str] = Field(min_length=1, max_length=16)
    default_agreement: DefaultAgreementDoc
    countries: dict[str, CountryDoc] = Field(default_factory=dict)
    agreements: list[AgreementDoc] = Field(default_factory=list)
    deny_rules: list[DenyRuleDoc] = Field(default_factory=list)
    # absent in a document: every default of QuotasDoc
    quotas: QuotasDoc = Field(default_factory=QuotasDoc)

    @model_validator(mode="after")
    def _consistent(self) -> PolicyDocument:
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def normalized(self) -> PolicyDocument:
        """The canonical order: what export writes, so export -> apply -> export is the identity."""

        def topics(value: Topics) -> Topics:
            return value if value == "*" else sorted(set(value))

        return PolicyDocument(
            ladder=list(self.ladder),
            default_agreement=DefaultAgreementDoc(
                ceiling=self.default_agreement.ceiling, topics=topics(self.default_agreement.topics)
            ),
            countries={
                code: CountryDoc(
                    name=c.name, status=c.status, accreditation=c.accreditation, groups=sorted(set(c.groups))
                )
                for code, c in sorted(self.countries.items())
            },
            agreements=sorted(
                (a.model_copy(update={"topics": topics(a.topics)}) for a in self.agreements),
                key=lambda a: (a.originator, a.recipient),
            ),
            deny_rules=sorted(
                (
                    r.model_copy(
                        update={
                            "topics": None if r.topics is None else sorted(set(r.topics)),
                            "tlp": None if r.tlp is None else sorted(set(r.tlp)),
                        }
                    )
                    for r in self.deny_rules
                ),
                key=lambda r: r.id,
            ),
            quotas=self.quotas.normalized(),
        )


def _problems(doc: PolicyDocument) -> list[str]:
    problems = []
    ladder = set(doc.ladder)
    if len(ladder) != len(doc.ladder):
        problems.append("ladder repeats a level")
    for rung in doc.ladder:
        if not RELEASABLE_RE.fullmatch(rung):
            problems.append(f"ladder level {rung!r} is not well formed")

    def level(value: str | None, where: str) -> None:
        if value is not None and value not in ladder:
            problems.append(f"{where}: {value} is not on the ladder")

    def topic_list(value: Topics | None, where: str) -> None:
        if value in (None, "*"):
            return
        for topic in value or []:
            if not TOPIC_RE.fullmatch(topic):
                problems.append(f"{where}: topic {topic!r} is not well formed")

    level(doc.default_agreement.ceiling, "default_agreement")
    topic_list(doc.default_agreement.topics, "default_agreement")
    for code, country in doc.countries.items():
        if not COUNTRY_RE.fullmatch(code) or code == "ALL":
            problems.append(f"countries.{code}: not an ISO 3166-1 alpha-3 code")
        level(country.accreditation, f"countries.{code}")
        for group in country.groups:
            if COUNTRY_RE.fullmatch(group) or group == "ALL" or not RELEASABLE_RE.fullmatch(group):
                problems.append(
                    f"countries.{code}: group {group!r} must be 2-32 of A-Z0-9_ and not a country code"
                )
    seen = set()
    for agreement in doc.agreements:
        pair = (agreement.originator, agreement.recipient)
        where = f"agreement {pair[0]}->{pair[1]}"
        if pair in seen:
            problems.append(f"{where} appears twice")
        seen.add(pair)
        if pair[0] == pair[1]:
            problems.append(f"{where} joins a country to itself")
        for code in pair:
            if code not in doc.countries:
                problems.append(f"{where}: {code} is not in countries")
        level(agreement.ceiling, where)
        topic_list(agreement.topics, where)
    names = set(doc.countries) | {g for c in doc.countries.values() for g in c.groups}
    ids = set()
    for rule in doc.deny_rules:
        where = f"deny rule {rule.id}"
        if rule.id in ids:
            problems.append(f"{where} appears twice")
        ids.add(rule.id)
        for who in (rule.originator, rule.recipient):
            if who is not None and who not in names:
                problems.append(f"{where}: {who} is neither a country nor a group")
        level(rule.classification_at_least, where)
        topic_list(rule.topics, where)
        for tlp in rule.tlp or []:
            if tlp not in TLP_LEVELS:
                problems.append(f"{where}: {tlp} is not a TLP 2.0 level")
    problems.extend(_quota_problems(doc.quotas, doc.countries))
    return problems


MAX_DOCUMENT_CHARS = 4_000_000  # 11 members' policy is ~10 KB; a coalition of hundreds fits
MAX_NESTING = 8  # the deepest valid document nests 4 ([countries.KOR] groups = [...])


def _nesting(text: str) -> int:
    """How deep arrays and inline tables nest in TOML text: a scan that skips strings and
    comments, so a hostile document is refused before the recursive parser sees it."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            j = i + 3
            while True:
                j = text.find(quote, j)
                if j < 0:
                    return deepest  # unterminated: the parser reports it
                if quote == '"""' and _escaped(text, j):
                    j += 1
                    continue
                break
            i = j + 3
            while i < n and text[i] == quote[0]:  # up to two quotes may end the content
                i += 1
            continue
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if (c == '"' and text[j] == "\\") else 1
            i = j
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _escaped(text: str, at: int) -> bool:
    """Whether the character at `at` follows an odd number of backslashes."""
    count = 0
    while at - count - 1 >= 0 and text[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def parse(text: str) -> PolicyDocument:
    """Parse and validate a TOML policy document; every problem is reported at once. Size and
    nesting are bounded first: a document past them is refused, never a crash or a 500."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise PolicyDocumentError([f"the document has {len(text)} characters; at most {MAX_DOCUMENT_CHARS}"])
    if _nesting(text) > MAX_NESTING:
        raise PolicyDocumentError([f"arrays or tables nest deeper than {MAX_NESTING} levels"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyDocumentError([f"not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # dotted keys or a form the scan did not count
        raise PolicyDocumentError([f"arrays or tables nest deeper than {MAX_NESTING} levels"]) from exc
    if _depth(data) > MAX_NESTING + 2:
        raise PolicyDocumentError([f"keys nest deeper than {MAX_NESTING + 2} levels"])
    return from_dict(data)


def _depth(data: Any) -> int:
    """How deep tables and arrays nest in parsed data (iteratively: no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_NESTING + 2:
                children = value.values() if isinstance(value, dict) else value
                stack.extend((child, level + 1) for child in children)
    return deepest


def from_dict(data: Any) -> PolicyDocument:
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        errors: list[str] = []
        for err in exc.errors():
            location = ".".join(str(p) for p in err.get("loc", ()))
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            errors.extend(f"{location}: {m}" if location else m for m in message.split("; "))
        raise PolicyDocumentError(errors) from exc


def render(doc: PolicyDocument, header: str = "") -> str:
    data = doc.normalized().model_dump(exclude_none=True)
    quotas = data["quotas"]
    for table in (quotas, *quotas["countries"].values()):
        _readable(table)
    if not quotas["countries"]:
        del quotas["countries"]
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + tomli_w.dumps(data)


def _readable(quotas: dict[str, Any]) -> None:
    """Sizes as "16 MiB" where a unit divides them; whole rates as integers."""
    for name in ("stored_bytes", "largest_envelope"):
        if name in quotas and size_text(quotas[name]).split()[1] != "B":
            quotas[name] = size_text(quotas[name])
    rate = quotas.get("requests_per_second")
    if isinstance(rate, float) and rate.is_integer():
        quotas["requests_per_second"] = int(rate)


def json_schema() -> dict[str, Any]:
    return PolicyDocument.model_json_schema()


def to_snapshot(doc: PolicyDocument) -> PolicySnapshot:
    def topics(value: Topics) -> frozenset[str] | None:
        return None if value == "*" else frozenset(value)

    members = {
        code: Member(code, c.status == "active", c.accreditation, frozenset(c.groups))
        for code, c in doc.countries.items()
    }
    agreements = {(a.originator, a.recipient): Agreement(a.ceiling, topics(a.topics)) for a in doc.agreements}
    default = Agreement(doc.default_agreement.ceiling, topics(doc.default_agreement.topics))
    deny = tuple(
        DenyRule(
            id=r.id,
            reason=r.reason,
            originator=r.originator,
            recipient=r.recipient,
            classification_at_least=r.classification_at_least,
            topics=None if r.topics is None else frozenset(r.topics),
            tlp=None if r.tlp is None else frozenset(r.tlp),
        )
        for r in doc.deny_rules
    )
    return PolicySnapshot(members, agreements, default, ladder=tuple(doc.ladder), deny_rules=deny)


# --- plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    changes: list[str] = field(default_factory=list)
    access: list[str] = field(default_factory=list)  # "KOR -> NZL gains ..." / "loses ..."
    errors: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def text(self) -> str:
        lines = ["Changes:"] + [f"  {c}" for c in self.changes or ["(none)"]]
        lines += ["Access (originator -> recipient):"] + [
            f"  {a}" for a in self.access or ["(no pair gains or loses access)"]
        ]
        if self.errors:
            lines += ["Refused:"] + [f"  {e}" for e in self.errors]
        return "\n".join(lines)


def _capabilities(snapshot: PolicySnapshot, originator: str, recipient: str) -> set[tuple[str, str, str]]:
    """Every (classification, topic, TLP) the pair allows, for an item naming the recipient."""
    allowed = set()
    for level, topic, tlp in itertools.product(snapshot.ladder, TOPICS, TLP_LEVELS):
        markings = Markings(level, tlp, (recipient,), (), (topic,))
        if evaluate(snapshot, originator, recipient, markings).allowed:
            allowed.add((level, topic, tlp))
    return allowed


def _describe(caps: set[tuple[str, str, str]], ladder: list[str]) -> str:
    by_level: dict[str, set[str]] = {}
    for level, topic, _tlp in caps:
        by_level.setdefault(level, set()).add(topic)
    parts = []
    for level in sorted(by_level, key=lambda lv: ladder.index(lv) if lv in ladder else len(ladder)):
        topics = by_level[level]
        parts.append(f"{level} ({'all topics' if topics >= set(TOPICS) else ', '.join(sorted(topics))})")
    return "; ".join(parts)


_GOVERNED = "membership, status, groups and accreditation change only by member-signed statements (msmt governance propose)"


def plan(current: PolicyDocument, proposed: PolicyDocument, *, with_access: bool = True) -> Plan:
    """What applying `proposed` over `current` changes, and (with_access) which pairs gain or
    lose access; the latter evaluates every pair at every level, topic and TLP."""
    result = Plan()
    cur, new = current.normalized(), proposed.normalized()
    if cur.ladder != new.ladder:
        result.changes.append(f"ladder: {' < '.join(cur.ladder)} -> {' < '.join(new.ladder)}")
    if cur.default_agreement != new.default_agreement:
        result.changes.append(
            f"default agreement: {_agreement_text(cur.default_agreement)} -> "
            f"{_agreement_text(new.default_agreement)}"
        )
    # Who is a member, and with which groups and accreditation, is decided by the members'
    # own signed statements; the document shows it for review but cannot change it.
    for code in sorted(set(cur.countries) | set(new.countries)):
        before, after = cur.countries.get(code), new.countries.get(code)
        if after is None:
            result.errors.append(f"country {code} cannot be removed here: {_GOVERNED}")
        elif before is None:
            result.errors.append(f"country {code} cannot be enrolled here: {_GOVERNED}")
        elif before != after:
            for name in ("name", "status", "accreditation", "groups"):
                old, value = getattr(before, name), getattr(after, name)
                if old != value:
                    result.errors.append(
                        f"country {code}: {name} {_fmt(old)} -> {_fmt(value)} cannot be changed here: {_GOVERNED}"
                    )
    old_agreements = {(a.originator, a.recipient): a for a in cur.agreements}
    new_agreements = {(a.originator, a.recipient): a for a in new.agreements}
    for pair in sorted(set(old_agreements) | set(new_agreements)):
        before_a, after_a = old_agreements.get(pair), new_agreements.get(pair)
        name = f"agreement {pair[0]}->{pair[1]}"
        if after_a is None:
            result.changes.append(f"{name}: removed (the default agreement applies)")
        elif before_a is None:
            result.changes.append(f"{name}: added, {_agreement_text(after_a)}")
        elif before_a != after_a:
            result.changes.append(f"{name}: {_agreement_text(before_a)} -> {_agreement_text(after_a)}")
    old_rules = {r.id: r for r in cur.deny_rules}
    new_rules = {r.id: r for r in new.deny_rules}
    for rule_id in sorted(set(old_rules) | set(new_rules)):
        if rule_id not in new_rules:
            result.changes.append(f"deny rule {rule_id}: removed")
        elif rule_id not in old_rules:
            result.changes.append(f"deny rule {rule_id}: added ({new_rules[rule_id].reason})")
        elif old_rules[rule_id] != new_rules[rule_id]:
            result.changes.append(f"deny rule {rule_id}: changed")
    result.changes.extend(quota_changes(cur.quotas, new.quotas))
    if with_access and result.changes and not result.errors:
        result.access = access_changes(cur, new)
    return result


def access_changes(current: PolicyDocument, proposed: PolicyDocument) -> list[str]:
    before, after = to_snapshot(current), to_snapshot(proposed)
    codes = sorted(set(current.countries) | set(proposed.countries))
    lines = []
    for originator, recipient in itertools.permutations(codes, 2):
        old = (
            _capabilities(before, originator, recipient)
            if originator in current.countries and recipient in current.countries
            else set()
        )
        new = _capabilities(after, originator, recipient)
        if new - old:
            lines.append(f"{originator} -> {recipient} gains {_describe(new - old, proposed.ladder)}")
        if old - new:
            lines.append(f"{originator} -> {recipient} loses {_describe(old - new, current.ladder)}")
    return lines


def quota_changes(current: QuotasDoc, proposed: QuotasDoc) -> list[str]:
    """Each default and each member's own quota that changes, with its effective value."""
    lines = []
    for name in QUOTA_FIELDS:
        old, new = getattr(current, name), getattr(proposed, name)
        if old != new:
            lines.append(f"quotas: {name} {_quota_text(name, old)} -> {_quota_text(name, new)}")
    for code in sorted(set(current.countries) | set(proposed.countries)):
        before, after = current.for_member(code), proposed.for_member(code)
        old_own = current.countries.get(code, QuotaOverrideDoc()).model_dump(exclude_none=True)
        new_own = proposed.countries.get(code, QuotaOverrideDoc()).model_dump(exclude_none=True)
        if old_own == new_own:
            continue
        parts = []
        for name in QUOTA_FIELDS:
            if old_own.get(name) == new_own.get(name):
                continue
            old_text = _quota_text(name, before[name]) + ("" if name in old_own else " (default)")
            new_text = _quota_text(name, after[name]) + ("" if name in new_own else " (default)")
            parts.append(f"{name} {old_text} -> {new_text}")
        lines.append(f"quotas of {code}: {'; '.join(parts)}")
    return lines


def _quota_text(name: str, value: float) -> str:
    if name in ("stored_bytes", "largest_envelope"):
        return size_text(int(value))
    return f"{value:g}"


def _agreement_text(agreement: AgreementDoc | DefaultAgreementDoc) -> str:
    topics = "all topics" if agreement.topics == "*" else ", ".join(agreement.topics) or "no topics"
    return f"up to {agreement.ceiling}, {topics}"


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
