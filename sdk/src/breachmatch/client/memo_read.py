"""Reading an export for a check through the row memo: only changed rows are normalised.

A first check reads and normalises every row (`breachmatch.client.patients`)
and leaves what each row gave in the row memo (`row_memo`). A re-check then:

* finds the file unchanged (a keyed hash of its bytes) and takes every row
  from the memo without reading the file at all; or
* reads the file (the same readers and counts, `ExportRead`), hashes each
  row as read, takes the rows the memo holds from it, and normalises only
  the rows it does not hold (changed or new); rows gone are not written
  back. The memo is then rewritten, unless the file changed while it was
  being read.

There is one memo per way of reading (format, ``--map`` file, facility,
encoding), whatever the file is called; a second export read the same way
replaces it (its rows the first one shares are still not normalised).

Either way the result is the check's `PatientKeys`, built as a full read
would build it: patients numbered in order of first appearance, rows sharing
an id merged, rows without one named ``row-<n>``. A remembered key carries
its keyed index, not its input: if its token is missing from the cache (a
rotated key, a tampered segment), `StaleMemoError` is raised before
anything is evaluated and the caller reads again with ``remembered=False``.

The memo is bound to the code that reads and normalises rows (`code_digest`),
so an upgrade that changes normalisation never reuses keys made by the old
rules.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import breachmatch.columns
import breachmatch.identifiers
import breachmatch.readers
import breachmatch.records
from breachmatch.client import key_index, row_memo
from breachmatch.client import patients as patients_module
from breachmatch.client.collector import collector_paused
from breachmatch.client.errors import PatientsFileError
from breachmatch.client.key_index import KIND_NUMBER, Hasher, KeyIndex, PatientKeys
from breachmatch.client.patients import ExportRead, load_mapping
from breachmatch.client.row_memo import HASH_SIZE, KEY, ROW, MemoRows, Remembered, RowMemo
from breachmatch.columns import ColumnMapping
from breachmatch.identifiers import match_keys


def read_keys(
    path: Path,
    memo: RowMemo,
    hasher: Hasher,
    *,
    format: str = "auto",
    mapping_file: Path | None = None,
    facility: str | None = None,
    encoding: str | None = None,
    remembered: bool = True,
) -> PatientKeys:
    """The check's view of an export; with ``remembered=False`` every row is normalised."""
    with collector_paused():
        mapping = load_mapping(mapping_file, facility)
        if not path.is_file():
            raise PatientsFileError(f"the patients file {path} does not exist (--patients)")
        try:
            context = memo.context(_context_parts(format, mapping_file, facility, encoding))
            before = memo.file_hash(path)
        except OSError as exc:
            reason = exc.strerror or "not a readable file"
            raise PatientsFileError(f"cannot read the patients file {path}: {reason}") from exc
        last = memo.load(context) if remembered else None
        if last is not None and last.complete and hmac.compare_digest(last.file_hash, before):
            return _patient_keys(
                path, last.rows, {}, last.bad_rows, last.unknown_identifier_systems
            )
        read = ExportRead(path)
        rows, fresh = _read_rows(read, format, mapping, encoding, last, memo, hasher)
        read.require_keys(len(rows.keys) > 0)
        if hmac.compare_digest(memo.file_hash(path), before):
            memo.store(context, Remembered(before, read.bad_rows, read.unknown_systems, rows))
        return _patient_keys(path, rows, fresh, read.bad_rows, read.unknown_systems)


def _read_rows(
    read: ExportRead,
    format: str,
    mapping: ColumnMapping,
    encoding: str | None,
    last: Remembered | None,
    memo: RowMemo,
    hasher: Hasher,
) -> tuple[MemoRows, dict[int, bytes]]:
    """Every row of the export, from the memo where it holds the row; fresh inputs by pair."""
    old = last.rows if last is not None else MemoRows.join([])
    counted = old.rows["keys"].astype(np.intp)
    old_counts, old_start = counted.tolist(), (np.cumsum(counted) - counted).tolist()
    digests = np.ascontiguousarray(old.rows["hash"]).view(f"V{HASH_SIZE}").ravel().tolist()
    held: dict[bytes, int] = dict(zip(digests, range(len(digests)), strict=True))
    hashes: list[bytes] = []
    numbers: list[int] = []
    ids: list[str] = []
    counts: list[int] = []
    starts: list[int] = []  # of each row's keys: in the old keys, or (offset) the new ones
    new_kinds: list[int] = []
    new_inputs: list[bytes] = []
    offset = len(old.keys)
    blank = bytes(16)
    for row in read.rows(format, mapping, encoding):
        digest = None if row.salvaged else memo.row_hash(row.record)
        at = held.get(digest) if digest is not None else None
        patient_id = row.record.patient_id or ""
        if at is not None:
            count, start = old_counts[at], old_start[at]
        else:
            found = match_keys(row.record).keys
            if not patient_id and not found:
                continue  # a blank row: nobody to check, nobody to notify
            count, start = len(found), offset + len(new_inputs)
            for key in found:
                new_kinds.append(KIND_NUMBER[key.kind])
                new_inputs.append(key.oprf_input())
        hashes.append(digest or blank)
        numbers.append(row.number)
        ids.append(patient_id)
        counts.append(count)
        starts.append(start)
    new_keys = np.zeros(len(new_inputs), dtype=KEY)
    if new_inputs:
        new_keys["index"] = hasher(new_inputs)
        new_keys["kind"] = new_kinds
    count_array = np.array(counts, dtype=np.intp)
    before = np.cumsum(count_array) - count_array
    take = np.repeat(np.array(starts, dtype=np.intp) - before, count_array) + np.arange(
        int(count_array.sum())
    )
    keys = np.concatenate((old.keys, new_keys))[take]
    fresh = {
        pair: new_inputs[source - offset]
        for pair, source in zip(
            np.flatnonzero(take >= offset).tolist(), take[take >= offset].tolist(), strict=True
        )
    }
    table = np.zeros(len(ids), dtype=ROW)
    if ids:
        table["hash"] = np.frombuffer(b"".join(hashes), dtype="<u8").reshape(-1, 2)
        table["number"] = numbers
        table["keys"] = counts
    return MemoRows(table, keys, ids), fresh


def _patient_keys(
    path: Path,
    memo: MemoRows,
    fresh: dict[int, bytes],
    bad_rows: int,
    systems: dict[str, int],
) -> PatientKeys:
    """Rows merged into patients as `read_patients` merges them.

    An export whose rows all have distinct patient ids (the usual case) is
    one patient per row, which a set tells at a fraction of the merge's cost.
    """
    ids = memo.ids
    if "" not in ids and len(set(ids)) == len(ids):
        of_row = np.arange(len(ids), dtype=np.intp)
        unnamed = 0
    else:
        ids, of_row, unnamed = _merge(ids, memo.rows["number"].tolist())
    counts = memo.rows["keys"].astype(np.intp)
    patient: NDArray[np.intp] = np.repeat(of_row, counts)
    with_keys = int(np.count_nonzero(np.bincount(patient, minlength=len(ids))))
    index = KeyIndex.build(
        patient,
        np.ascontiguousarray(memo.keys["kind"]),
        np.ascontiguousarray(memo.keys["index"]).astype(np.uint64, copy=False),
        fresh,
    )
    return PatientKeys(path, ids, index, bad_rows, len(ids) - with_keys, unnamed, dict(systems))


def _merge(ids: list[str], numbers: list[int]) -> tuple[list[str], NDArray[np.intp], int]:
    """(patient ids, patient of each row, rows named by number) of rows sharing ids."""
    number: dict[str, int] = {}
    of_row: list[int] = []
    unnamed = 0
    for patient_id, row in zip(ids, numbers, strict=True):
        if not patient_id:
            unnamed += 1
            patient_id = f"row-{row}"
        of_row.append(number.setdefault(patient_id, len(number)))
    return list(number), np.array(of_row, dtype=np.intp), unnamed


def _context_parts(
    format: str, mapping_file: Path | None, facility: str | None, encoding: str | None
) -> list[bytes]:
    """What decides what a row gives: the memo of one way of reading is not another's.

    The file's name is not part of it: an export written under a new name
    each day (``patients-2026-11-30.csv``) is still the same hospital's
    patients, and its unchanged rows are found in the memo.
    """
    return [
        code_digest(),
        format.encode("utf-8"),
        mapping_file.read_bytes() if mapping_file else b"",
        (facility or "").encode("utf-8"),
        (encoding or "").encode("utf-8"),
    ]


@functools.cache
def code_digest() -> bytes:
    """SHA-256 of the source of everything that turns a file into match keys.

    A changed reader, column rule or normaliser changes it, so no memo made
    by other code is used (any edit counts: there is no version to forget).
    """
    files: list[Path] = []
    for package in (breachmatch.readers, breachmatch.columns, breachmatch.identifiers):
        files += sorted(Path(package.__file__).parent.glob("*.py"))  # type: ignore[arg-type]
    for module in (breachmatch.records, patients_module, key_index, row_memo):
        files.append(Path(module.__file__))  # type: ignore[arg-type]
    files.append(Path(__file__))
    digest = hashlib.sha256()
    for file in files:
        data = file.read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()
