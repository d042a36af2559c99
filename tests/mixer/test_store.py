"""The CAS store against a real DuckDB file and real blob files."""

from __future__ import annotations

import hashlib
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from mixer.errors import ConflictError, InvalidRefError, NotFoundError, StoreError
from mixer.store import CasStore, digest_of

SCENARIO = b"name: payment-flow\ngears: []\nwires: []\n"
OTHER = b"name: payment-flow\ngears: []\nwires: []\n# v2\n"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mixer.duckdb"


@pytest.fixture
def store(tmp_path: Path, db_path: Path) -> Iterator[CasStore]:
    conn = duckdb.connect(str(db_path))
    with CasStore(tmp_path / "cas", conn) as cas:
        yield cas
    conn.close()


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def row_count(store: CasStore) -> int:
    return len(store.list("scenario")) + len(store.list("spec"))


def test_put_get_round_trip(store: CasStore, tmp_path: Path) -> None:
    result = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    hex_digest = hashlib.sha256(SCENARIO).hexdigest()
    assert result.digest == f"sha256:{hex_digest}"
    assert result.created
    assert result.size == len(SCENARIO)

    blob = store.get("scenario", "payment-flow:v1.0.0")
    assert (blob.data, blob.digest, blob.name, blob.tag) == (
        SCENARIO,
        result.digest,
        "payment-flow",
        "v1.0.0",
    )
    path = tmp_path / "cas" / "blobs" / "sha256" / hex_digest[:2] / hex_digest
    assert path.read_bytes() == SCENARIO
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert blob_files(tmp_path / "cas") == [path]  # no temp files left behind


def test_identical_reimport_is_a_no_op(store: CasStore, tmp_path: Path) -> None:
    first = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    again = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    assert first.created
    assert not again.created
    assert again.digest == first.digest
    assert [r.ref for r in store.list("scenario")] == ["payment-flow:v1.0.0"]
    assert len(blob_files(tmp_path / "cas")) == 1


def test_tag_reuse_with_different_bytes_is_refused(store: CasStore) -> None:
    old = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO).digest
    with pytest.raises(ConflictError) as caught:
        store.put("scenario", "payment-flow", "v1.0.0", OTHER)
    message = str(caught.value)
    assert old in message
    assert digest_of(OTHER) in message
    assert "new tag" in message
    assert store.get("scenario", "payment-flow:v1.0.0").data == SCENARIO


def test_kinds_are_separate_namespaces(store: CasStore) -> None:
    store.put("spec", "visa", "v1.0.0", OTHER)
    store.put("scenario", "visa", "v1.0.0", SCENARIO)
    assert store.get("spec", "visa:v1.0.0").data == OTHER
    assert store.get("scenario", "visa:v1.0.0").data == SCENARIO
    with pytest.raises(NotFoundError):
        store.get("spec", digest_of(SCENARIO))


def test_latest_is_the_highest_semver_tag(store: CasStore) -> None:
    for i, tag in enumerate(["1.9.0", "nightly", "1.10.0", "alpha"]):
        store.put("spec", "visa", tag, b"spec %d" % i)
    assert store.get("spec", "visa:latest").tag == "1.10.0"
    store.put("spec", "visa", "v2.0.0-rc1", b"candidate")
    assert store.get("spec", "visa:latest").tag == "v2.0.0-rc1"
    store.put("spec", "visa", "v2.0.0", b"final")
    assert store.resolve("spec", "visa:latest") == digest_of(b"final")
    assert store.get("spec", "visa").tag == "v2.0.0"  # a bare name means name:latest
    assert store.tags("spec", "visa") == [
        "1.9.0",
        "1.10.0",
        "v2.0.0-rc1",
        "v2.0.0",
        "alpha",
        "nightly",
    ]


def test_latest_without_semver_tags_lists_the_tags(store: CasStore) -> None:
    store.put("spec", "visa", "nightly", b"a")
    store.put("spec", "visa", "stable", b"b")
    with pytest.raises(NotFoundError, match=r"no SemVer tag.*nightly, stable"):
        store.resolve("spec", "visa:latest")
    with pytest.raises(NotFoundError, match="no spec named 'mastercard'"):
        store.resolve("spec", "mastercard")


def test_list_sorts_by_name_then_version(store: CasStore) -> None:
    store.put("scenario", "zeta", "v1.0.0", b"z")
    store.put("scenario", "alpha", "v1.10.0", b"a2")
    store.put("scenario", "alpha", "v1.2.0", b"a1")
    refs = store.list("scenario")
    assert [r.ref for r in refs] == ["alpha:v1.2.0", "alpha:v1.10.0", "zeta:v1.0.0"]
    assert [r.ref for r in store.list("scenario", "zeta")] == ["zeta:v1.0.0"]
    assert refs[0].size == 2
    assert refs[0].created_at.tzinfo is not None
    assert store.tags("scenario", "missing") == []


def test_sha256_refs(store: CasStore) -> None:
    digest = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO).digest
    blob = store.get("scenario", digest)
    assert blob.data == SCENARIO
    assert blob.name is None
    assert store.resolve("scenario", digest.upper().replace("SHA256:", "sha256:")) == digest
    with pytest.raises(NotFoundError, match="no scenario with digest"):
        store.get("scenario", digest_of(b"never imported"))


def test_unknown_tag_lists_known_tags(store: CasStore) -> None:
    store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    with pytest.raises(NotFoundError, match=r"payment-flow:v9.*its tags: v1\.0\.0"):
        store.get("scenario", "payment-flow:v9")


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("", "invalid reference"),
        (" visa:v1", "invalid reference"),
        ("visa:", "must not be empty"),
        ("visa:v1:x", "more than one ':'"),
        ("-visa:v1", "invalid name"),
        ("vi sa:v1", "invalid name"),
        ("sha256:abc", "64 hex digits"),
        ("sha256:" + "g" * 64, "64 hex digits"),
    ],
)
def test_bad_refs_are_rejected(store: CasStore, ref: str, needle: str) -> None:
    with pytest.raises(InvalidRefError, match=needle):
        store.get("scenario", ref)


@pytest.mark.parametrize(
    ("name", "tag", "needle"),
    [
        ("Bad/Name", "v1", "invalid name"),
        ("x" * 101, "v1", "invalid name"),
        ("sha256", "v1", "reserved"),
        ("visa", "", "must not be empty"),
        ("visa", "v1:0", "must not contain ':'"),
        ("visa", "v 1", "whitespace"),
        ("visa", "latest", "'latest' is reserved"),
        ("visa", "LATEST", "'latest' is reserved"),
    ],
)
def test_bad_names_and_tags_are_rejected(store: CasStore, name: str, tag: str, needle: str) -> None:
    with pytest.raises(InvalidRefError, match=needle):
        store.put("spec", name, tag, b"x")
    assert row_count(store) == 0


def test_names_are_case_insensitive(store: CasStore) -> None:
    store.put("spec", "Visa", "v1.0.0", b"x")
    assert store.get("spec", "VISA:v1.0.0").name == "visa"


def test_unknown_kind_is_rejected(store: CasStore) -> None:
    with pytest.raises(InvalidRefError, match="unknown kind 'gear'; known: scenario, spec"):
        store.put("gear", "visa", "v1", b"x")


def test_corrupted_blob_is_reported_and_repaired_by_reimport(
    store: CasStore, tmp_path: Path
) -> None:
    store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    (path,) = blob_files(tmp_path / "cas")
    path.write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupted") as caught:
        store.get("scenario", "payment-flow:v1.0.0")
    assert str(path) in str(caught.value)

    assert not store.put("scenario", "payment-flow", "v1.0.0", SCENARIO).created
    assert store.get("scenario", "payment-flow:v1.0.0").data == SCENARIO


def test_dry_run_writes_nothing(store: CasStore, tmp_path: Path) -> None:
    result = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO, dry_run=True)
    assert result.dry_run
    assert result.created
    assert result.digest == digest_of(SCENARIO)
    assert row_count(store) == 0
    assert not (tmp_path / "cas" / "blobs").exists()

    store.put("scenario", "payment-flow", "v1.0.0", SCENARIO)
    with pytest.raises(ConflictError):  # a dry run still reports the conflict
        store.put("scenario", "payment-flow", "v1.0.0", OTHER, dry_run=True)
    assert len(blob_files(tmp_path / "cas")) == 1


def test_reopened_store_resolves_everything(tmp_path: Path, db_path: Path) -> None:
    conn = duckdb.connect(str(db_path))
    with CasStore(tmp_path / "cas", conn) as cas:
        digest = cas.put("scenario", "payment-flow", "v1.0.0", SCENARIO).digest
        cas.put("spec", "visa", "v1.0.0", OTHER)
    conn.close()

    conn = duckdb.connect(str(db_path))
    with CasStore(tmp_path / "cas", conn) as cas:
        assert cas.resolve("scenario", "payment-flow:latest") == digest
        assert cas.get("scenario", digest).data == SCENARIO
        assert cas.get("spec", "visa:v1.0.0").data == OTHER
        assert not cas.put("scenario", "payment-flow", "v1.0.0", SCENARIO).created
        assert len(cas.list("scenario")) == 1
    conn.close()


def test_concurrent_puts_of_the_same_content(store: CasStore, tmp_path: Path) -> None:
    threads = 8
    barrier = threading.Barrier(threads)

    def put(i: int) -> bool:
        barrier.wait()
        same = store.put("scenario", "payment-flow", "v1.0.0", SCENARIO).created
        store.put("scenario", "payment-flow", f"v1.0.{i + 1}", SCENARIO)
        return same

    with ThreadPoolExecutor(threads) as pool:
        created = list(pool.map(put, range(threads)))

    assert created.count(True) == 1
    assert len(store.list("scenario")) == threads + 1
    assert store.get("scenario", "payment-flow:latest").tag == f"v1.0.{threads}"
    assert len(blob_files(tmp_path / "cas")) == 1
    assert store.get("scenario", "payment-flow:v1.0.0").data == SCENARIO
