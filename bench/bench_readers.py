"""Reader and normalisation throughput on a realistic leak dump.

Generates the synthetic Danish leak (cp1252, semicolon CSV, messy identifiers)
at the requested size, and the same rows as an .xlsx workbook (two sheets,
title blocks, typed cells), then measures, as medians over `--repeat` runs:
reading + column mapping alone, and reading + match-key normalisation (what
ingest does before any crypto), per file. Prints one table; tests never
assert speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, open_records
from breachmatch_dev.dumps import write_dataset, write_xlsx
from breachmatch_dev.synthetic import leak_rows


def _read(path: Path, normalise: bool) -> tuple[int, int]:
    rows = keys = 0
    with open_records(path) as stream:
        for item in stream:
            if isinstance(item, BadRow):
                continue
            rows += 1
            if normalise:
                keys += len(match_keys(item).keys)
    return rows, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60_000)
    parser.add_argument("--leaked", type=int, default=40_000)
    parser.add_argument("--strangers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp), args.patients, args.leaked, args.strangers)
        workbook = Path(tmp) / "leak.xlsx"
        write_xlsx(leak_rows(args.patients, args.leaked, args.strangers).rows, workbook)
        for path in (data.leak, workbook):
            size = path.stat().st_size
            print(f"\n{path.name}: {data.leaked_rows:,} rows, {size / 1e6:.1f} MB")
        print(f"\n{'stage':<40}{'rows/s':>12}{'keys/s':>12}")
        print("-" * 64)
        for path in (data.leak, workbook):
            for label, normalise in (("read + map", False), ("read + map + match keys", True)):
                times, keys = [], 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    rows, keys = _read(path, normalise)
                    times.append(time.perf_counter() - start)
                median = statistics.median(times)
                keys_text = f"{keys / median:>12,.0f}" if normalise else f"{'—':>12}"
                print(f"{path.suffix[1:] + ': ' + label:<40}{rows / median:>12,.0f}{keys_text}")


if __name__ == "__main__":
    main()
