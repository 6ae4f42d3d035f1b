"""Streaming at scale: memory stays flat as the dump grows, every row comes through.

Speed is measured in bench/bench_readers.py, not asserted here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from breachmatch.readers import BadRow, open_records

ROWS = 200_000


def _csv(path: Path) -> None:
    with path.open("w", encoding="cp1252", newline="") as out:
        out.write("Navn;CPR-nr.;Telefon;E-mail\r\n")
        out.writelines(
            f"Person Æ{i};{i % 311 + 10:06d}-{i % 9999:04d};+45 {i:08d};p{i}@example.dk\r\n"
            for i in range(ROWS)
        )


def _sql(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("CREATE TABLE `p` (`navn` text, `cpr` char(11), `tlf` text, `email` text);\n")
        for start in range(0, ROWS, 2000):
            tuples = ",".join(
                f"('Person \\'{i}\\'','{i:010d}','+45 {i:08d}','p{i}@example.dk')"
                for i in range(start, start + 2000)
            )
            out.write(f"INSERT INTO `p` VALUES {tuples};\n")  # noqa: S608 - dump text, not a query


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("scale")
    paths = {"csv": directory / "dump.csv", "sql": directory / "dump.sql"}
    _csv(paths["csv"])
    _sql(paths["sql"])
    return paths


def test_memory_stays_far_below_the_dump_size(dumps: dict[str, Path]) -> None:
    size = dumps["csv"].stat().st_size
    tracemalloc.start()
    try:
        with open_records(dumps["csv"]) as stream:
            rows = sum(1 for _ in stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == ROWS
    assert size > 8_000_000
    assert peak < min(size / 5, 2 * 1024 * 1024), f"peak {peak} bytes for a {size}-byte dump"


@pytest.mark.parametrize("fmt", ["csv", "sql"])
def test_large_dumps_stream_every_row(dumps: dict[str, Path], fmt: str) -> None:
    with open_records(dumps[fmt]) as stream:
        count = sum(1 for item in stream if not isinstance(item, BadRow))
        assert stream.stats.bad_rows.total() == 0
        assert stream.bytes_read == stream.total_bytes
    assert count == ROWS
