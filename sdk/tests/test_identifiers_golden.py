"""match_keys against a frozen record of what it gave: every key byte-identical, forever.

A hospital and the operator only ever meet on equal OPRF inputs, so a faster
normaliser must give exactly the keys, reason codes and placeholder kinds the
old one gave — for clean rows and for ugly ones. ``data/match_keys_golden.json.gz``
holds records and the extraction of each, made once by the normalisation of
``breachmatch:v1``:

* every record read from synthetic dumps (``breachmatch_dev``) in every shape,
  damaged the ways the readers repair or salvage (ragged and short rows,
  filler rows, too-wide bad rows), and from a hospital export (separate given
  and family names);
* records whose fields are drawn, with a fixed seed, from every string the
  identifier tests use, mutated (case, width, whitespace, separators, masks,
  decomposed letters, cut short, repeated) and mixed across fields.

Inputs are stored, not regenerated, so a change to a reader or a generator
cannot move the goalposts. Regenerate (``python sdk/tests/test_identifiers_golden.py``)
only together with a new ``DOMAIN_PREFIX`` version: a different key for the
same value under ``v1`` would split every match between old and new tokens.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import random
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from breachmatch.identifiers import KeyKind, Reason, match_keys
from breachmatch.readers import BadRow, open_records
from breachmatch.records import PersonRecord

GOLDEN = Path(__file__).parent / "data" / "match_keys_golden.json.gz"
_FIELDS = (
    "cpr", "ssn", "mrn", "facility", "email", "phone",
    "full_name", "given_name", "family_name", "birth_date",
)  # fmt: skip
_LISTS = ("extra_emails", "extra_phones")


def _extraction(record: PersonRecord) -> dict[str, Any]:
    found = match_keys(record)
    return {
        "keys": [[key.kind.value, key.value] for key in found.keys],
        "invalid": [[kind.value, str(reason)] for kind, reason in found.invalid],
        "placeholders": [kind.value for kind in found.placeholders],
    }


def _record(fields: dict[str, Any]) -> PersonRecord:
    return PersonRecord(**fields)


def _fields(record: PersonRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: getattr(record, name) for name in _FIELDS if getattr(record, name) is not None
    }
    for name in _LISTS:
        if getattr(record, name):
            values[name] = list(getattr(record, name))
    return values


def test_match_keys_gives_exactly_the_recorded_keys() -> None:
    cases = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    assert len(cases) > 4000  # the record is whole, not truncated
    different = [
        n for n, case in enumerate(cases) if _extraction(_record(case["in"])) != case["out"]
    ]
    assert not different, f"{len(different)} records now give other keys, e.g. #{different[:5]}"


def test_the_record_covers_every_outcome() -> None:
    """Keys of every kind, every reason code and every placeholder kind occur in it."""
    cases = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    kinds = {key[0] for case in cases for key in case["out"]["keys"]}
    reasons = {reason for case in cases for _, reason in case["out"]["invalid"]}
    fillers = {kind for case in cases for kind in case["out"]["placeholders"]}
    assert kinds == {kind.value for kind in KeyKind}
    assert fillers == {kind.value for kind in KeyKind}
    assert reasons == {reason.value for reason in Reason}


# --- making the record (run only with a new DOMAIN_PREFIX version) -------------


def _read(data: bytes) -> Iterator[PersonRecord]:
    with open_records(io.BytesIO(data)) as stream:
        for item in stream:
            if isinstance(item, BadRow):
                if item.salvaged is not None:
                    yield item.salvaged
            else:
                yield item


def _dump_records() -> Iterator[PersonRecord]:
    from breachmatch_dev import dumps, synthetic

    leak = synthetic.leak_rows(300, 200, 150, seed=11)
    with tempfile.TemporaryDirectory() as scratch:
        for shape, options in [
            ("csv", {"ragged": True, "short": True, "fillers": True, "bad_every": 17}),
            ("jsonl", {"bad_every": 13}),
            ("sql", {}),
            ("fhir", {}),
        ]:
            path = Path(scratch) / f"leak.{shape}"
            dumps.write_leak(leak.rows, path, shape, **options)
            yield from _read(path.read_bytes())
        export = io.BytesIO()
        dumps.write_hospital_csv(leak.hospital, export)
        yield from _read(export.getvalue())


def _test_strings() -> list[str]:
    """Every string literal of the identifier tests: the ugly values people thought of."""
    strings: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("test_identifiers_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and len(value) < 80 and "\n" not in value:
                strings.add(value)
    return sorted(strings)


def _mutated(value: str, rng: random.Random) -> str:
    choice = rng.randrange(12)
    if choice == 0:
        return value.upper()
    if choice == 1:
        return value.lower()
    if choice == 2:  # full width
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
    if choice == 3:
        return f"  {value}\u00a0"
    if choice == 4 and value:
        cut = rng.randrange(len(value))
        return value[:cut] + rng.choice("-./ \u2013*xX'") + value[cut:]
    if choice == 5:
        return unicodedata.normalize("NFD", value)
    if choice == 6 and len(value) > 2:
        return value[: rng.randrange(1, len(value))]
    if choice == 7:
        return value.replace(" ", rng.choice(["", "  ", "\t", "-"]))
    if choice == 8:
        return value * rng.randrange(2, 12)
    return value


def _ugly_records(count: int) -> Iterator[PersonRecord]:
    rng = random.Random(20261130)  # a fixed corpus, not secrets
    pool = _test_strings()
    for _ in range(count):
        fields: dict[str, Any] = {}
        for name in _FIELDS:
            if rng.random() < 0.45:
                fields[name] = _mutated(rng.choice(pool), rng)
        for name in _LISTS:
            if rng.random() < 0.2:
                fields[name] = [_mutated(rng.choice(pool), rng) for _ in range(rng.randrange(1, 4))]
        yield _record(fields)


def _write_golden() -> None:
    """Keep only records whose keys do not depend on today's date (until 2050 at least)."""
    import datetime as dt

    from breachmatch.identifiers import birth_date

    records = [*_dump_records(), *_ugly_records(4000)]
    cases = [{"in": _fields(record), "out": _extraction(record)} for record in records]
    birth_date._today[0] = (float("inf"), dt.date(2050, 1, 1))
    cases = [case for case in cases if _extraction(_record(case["in"])) == case["out"]]
    GOLDEN.write_bytes(gzip.compress(json.dumps(cases, ensure_ascii=False).encode(), mtime=0))
    print(f"{len(cases)} records written to {GOLDEN}")


if __name__ == "__main__":
    _write_golden()
