"""References into the CAS store: validation of kinds, names and tags, parsing of ref strings,
and the SemVer ordering that `name:latest` and listings use.

Accepted reference forms (all validated here, resolved by `CasStore`):

- `name:tag`          one tag of one name (tags are immutable)
- `name:latest`       the highest tag of `name` that parses as SemVer (a leading `v` is allowed)
- `name`              shorthand for `name:latest`
- `sha256:<64 hex>`   one blob by content digest

Names match `[a-z0-9][a-z0-9._-]{0,99}` case-insensitively and are stored lower-cased, so
`Visa` and `visa` are the same name; `sha256` is reserved. Tags are case-sensitive, 1-128
printable characters without `:` or whitespace; `latest` (any case) is reserved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import semver

from mixer.errors import InvalidRefError

Kind = Literal["scenario", "spec"]
KINDS: tuple[Kind, ...] = ("scenario", "spec")
LATEST = "latest"
DIGEST_PREFIX = "sha256:"
MAX_TAG_LENGTH = 128

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-f]{64}")
_NO_VERSION = semver.Version(0)


@dataclass(frozen=True, slots=True)
class ParsedRef:
    """A syntactically valid reference: either `digest` is set, or `name` and `tag` are
    (`tag` is `latest` for `name:latest` and bare `name`)."""

    name: str = ""
    tag: str = ""
    digest: str | None = None


def digest_of(data: bytes) -> str:
    """The content digest of `data` in its ref form, `sha256:<64 lower-case hex>`."""
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise InvalidRefError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def check_name(name: str) -> str:
    """Validate a name and return it lower-cased."""
    if not _NAME.fullmatch(name):
        raise InvalidRefError(
            f"invalid name {name!r}: use 1-100 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit (e.g. 'payment-flow')"
        )
    lowered = name.lower()
    if lowered == "sha256":
        raise InvalidRefError("invalid name 'sha256': it is reserved for digest references")
    return lowered


def check_tag(tag: str) -> str:
    """Validate a tag that is about to be stored (so `latest` is refused)."""
    _check_tag_syntax(tag)
    if tag.lower() == LATEST:
        raise InvalidRefError(
            f"invalid tag {tag!r}: 'latest' is reserved (it resolves to the highest SemVer tag); "
            "use a version such as v1.0.0"
        )
    return tag


def _check_tag_syntax(tag: str) -> None:
    if not tag:
        raise InvalidRefError("invalid tag '': a tag must not be empty (e.g. v1.0.0)")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidRefError(f"invalid tag {tag[:20]!r}...: longer than {MAX_TAG_LENGTH} chars")
    if ":" in tag or any(c.isspace() for c in tag) or not tag.isprintable():
        raise InvalidRefError(
            f"invalid tag {tag!r}: a tag must not contain ':', whitespace or control characters"
        )


def check_digest(text: str) -> str:
    """Validate `sha256:<hex>` and return it with the hex lower-cased."""
    hex_part = text[len(DIGEST_PREFIX) :].lower()
    if not text.lower().startswith(DIGEST_PREFIX) or not _HEX.fullmatch(hex_part):
        raise InvalidRefError(
            f"invalid digest reference {text!r}: expected 'sha256:' followed by 64 hex digits"
        )
    return DIGEST_PREFIX + hex_part


def parse_ref(ref: str) -> ParsedRef:
    """Parse `name:tag`, `name:latest`, bare `name` or `sha256:<hex>`; raise InvalidRefError."""
    if not ref or ref != ref.strip():
        raise InvalidRefError(
            f"invalid reference {ref!r}: expected 'name:tag', 'name:latest', 'name' "
            "or 'sha256:<64 hex digits>'"
        )
    if ref.lower().startswith(DIGEST_PREFIX):
        return ParsedRef(digest=check_digest(ref))
    name, sep, tag = ref.partition(":")
    if not sep:
        return ParsedRef(name=check_name(name), tag=LATEST)
    if ":" in tag:
        raise InvalidRefError(f"invalid reference {ref!r}: more than one ':'")
    name = check_name(name)
    _check_tag_syntax(tag)
    return ParsedRef(name=name, tag=LATEST if tag.lower() == LATEST else tag)


def semver_of(tag: str) -> semver.Version | None:
    """The SemVer version a tag names (`1.2.3`, `v1.2.3-rc1`), or None if it is not SemVer."""
    text = tag[1:] if tag.startswith("v") else tag
    try:
        return semver.Version.parse(text)
    except ValueError:
        return None


def tag_order(tag: str) -> tuple[int, semver.Version, str]:
    """Sort key: SemVer tags ascending by version, then the others alphabetically."""
    version = semver_of(tag)
    if version is None:
        return (1, _NO_VERSION, tag)
    return (0, version, tag)
