"""SQL dumps: MySQL and PostgreSQL inserts, COPY blocks, escapes, NULLs, two tables."""

# The dumps below keep the one-statement-per-line shape real dumps have, and
# build dump text, not queries: long lines and "SQL built from strings" are
# the point here.
# ruff: noqa: E501, S608

from __future__ import annotations

import io

from breachmatch.readers import BadRow, RawRow, RecordStream, open_records
from breachmatch.records import Category

MYSQL_DUMP = r"""-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `patienter`;
CREATE TABLE `patienter` (
  `id` int NOT NULL AUTO_INCREMENT,
  `navn` varchar(100) DEFAULT 'ukendt, navn',
  `cpr` char(11) DEFAULT NULL,
  `telefon` varchar(20),
  `email` varchar(100),
  `oprettet` datetime DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  KEY `idx_cpr` (`cpr`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
LOCK TABLES `patienter` WRITE;
INSERT INTO `patienter` VALUES (1,'Søren O\'Test','010180-1234','+45 12 34 56 78','SOREN@EXAMPLE.DK','2025-01-01 10:00:00'),(2,'Åse \"Test\" Østergård','0202902345',NULL,NULL,NULL),(3,'Back\\slash; semikolon','030303-3456','12345678',_utf8mb4'bo@example.dk',now()),(4,'Dobbelt ''citat''',NULL,'0045-87654321','',NULL);
UNLOCK TABLES;
CREATE TABLE `henvisninger` (`cpr` char(11), `henvisning` text, `diagnose` varchar(10));
INSERT INTO `henvisninger` (`cpr`, `henvisning`, `diagnose`) VALUES ('010180-1234','Til kardiolog:\nEKG','DI20'),('0202902345',NULL,'DJ45');
INSERT INTO `henvisninger` (`cpr`, `henvisning`, `diagnose`) VALUES ('1','kun to');
"""

POSTGRES_DUMP = r"""--
-- PostgreSQL database dump
--
SET statement_timeout = 0;
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated := now(); RETURN NEW; END;
$$;
CREATE TABLE public.patients (
    patient_id integer NOT NULL,
    first_name text,
    last_name text,
    ssn text,
    email text,
    medication text
);
COPY public.patients (patient_id, first_name, last_name, ssn, email, medication) FROM stdin;
1	Ann	TEST	123-45-6789	ANN@EXAMPLE.ORG	\N
2	Bob\tTab	O'Test	987-65-4321	\N	lisinopril\n10 mg
\.
INSERT INTO public.patients (patient_id, first_name, last_name, ssn, email, medication) VALUES (3, 'C:\path ''quoted''', 'Test', NULL, E'e\x40example.org', '');
INSERT INTO public.visits (patient_id, notes) VALUES (3, 'follow-up; call back'), (4, $$dollar ' quoted$$);
"""


def _open(data: bytes, format: str = "auto") -> RecordStream:
    return open_records(io.BytesIO(data), format)


def test_mysql_dump_with_two_tables_escapes_and_nulls() -> None:
    with _open(MYSQL_DUMP.encode()) as stream:
        records, bad = stream.read_all()
        assert (stream.format, stream.members[0].dialect) == ("sql", "mysql")
        tables = {table: plan.decisions for (table, _), plan in stream.plans_seen.items()}
    assert [d.header for d in tables["patienter"]] == [
        "id",
        "navn",
        "cpr",
        "telefon",
        "email",
        "oprettet",
    ]
    assert bad == [BadRow("sql_wrong_value_count", 7, "")]
    soren, ase, back, dobbelt, ref1, ref2 = records
    assert soren.full_name == "Søren O'Test"
    assert (soren.cpr, soren.phone, soren.email) == (
        "010180-1234",
        "+45 12 34 56 78",
        "SOREN@EXAMPLE.DK",
    )
    assert ase.full_name == 'Åse "Test" Østergård'
    assert (ase.phone, ase.email) == (None, None)
    assert ase.categories == Category.NATIONAL_ID
    assert back.full_name == "Back\\slash; semikolon"
    assert back.email == "bo@example.dk"  # charset introducer
    assert dobbelt.full_name == "Dobbelt 'citat'"
    assert dobbelt.cpr is None
    assert dobbelt.categories == Category.CONTACT
    assert ref1.cpr == "010180-1234"
    assert ref1.categories == Category.NATIONAL_ID | Category.REFERRALS | Category.DIAGNOSES
    assert ref2.categories == Category.NATIONAL_ID | Category.DIAGNOSES


def test_mysql_escapes_decode_to_the_stored_text() -> None:
    dump = rb"INSERT INTO t (a,b,c,d) VALUES ('x\ny\tz','\0\Z\\','100\% \_x','\q''');"
    with _open(dump) as stream:
        (row,) = [r for r in stream.raw_rows() if isinstance(r, RawRow)]
    assert row.values == ["x\ny\tz", "\0\x1a\\", "100\\% \\_x", "q'"]


def test_postgres_dump_with_copy_inserts_and_function_bodies() -> None:
    with _open(POSTGRES_DUMP.encode()) as stream:
        records, bad = stream.read_all()
        assert stream.members[0].dialect == "postgresql"
        raw_tables = [t for t, _ in stream.plans_seen]
    assert not bad
    assert raw_tables == ["public.patients", "public.visits"]
    ann, bob, third, visit3, visit4 = records
    assert (ann.patient_id, ann.given_name, ann.family_name) == ("1", "Ann", "TEST")
    assert (ann.ssn, ann.email) == ("123-45-6789", "ANN@EXAMPLE.ORG")
    assert ann.categories == Category.CONTACT | Category.NATIONAL_ID
    assert bob.given_name == "Bob\tTab"
    assert bob.family_name == "O'Test"
    assert bob.categories == Category.NATIONAL_ID | Category.MEDICATION
    assert third.given_name == "C:\\path 'quoted'"  # standard strings keep backslashes
    assert third.email == "e@example.org"  # E'' string escapes
    assert third.categories == Category.CONTACT
    assert visit3.categories == Category.FREE_TEXT
    assert visit4.categories == Category.FREE_TEXT


def test_insert_without_columns_or_create_table_uses_positions() -> None:
    with _open(b"INSERT INTO t VALUES (1,'a'),(2,'b');\nINSERT INTO t VALUES (3);") as stream:
        rows = [r for r in stream.raw_rows() if isinstance(r, RawRow)]
    assert [r.headers for r in rows] == [("column_1", "column_2")] * 2 + [("column_1",)]
    assert [r.values for r in rows] == [["1", "a"], ["2", "b"], ["3"]]


def test_stray_quote_is_one_bad_row_and_the_next_rows_still_count() -> None:
    dump = (
        b"INSERT INTO p (navn, cpr) VALUES ('A','0101801234'),('O'Brien','0202802345'),"
        b"('C','0303803456');\nINSERT INTO p (navn, cpr) VALUES ('D','0404804567');\n"
    )
    with _open(dump) as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234", "0303803456", "0404804567"]
    assert bad == [BadRow("sql_syntax", 2, "")]


def test_unterminated_string_at_the_end_is_unbalanced() -> None:
    dump = b"INSERT INTO p (navn, cpr) VALUES ('A','0101801234'),('B','0202"
    with _open(dump) as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234"]
    assert [b.reason for b in bad] == ["sql_unbalanced"]


def test_copy_without_its_end_marker_is_unbalanced() -> None:
    dump = b"COPY public.p (name, ssn) FROM stdin;\nAnn\t123-45-6789\n"
    with _open(dump) as stream:
        records, bad = stream.read_all()
    assert [r.ssn for r in records] == ["123-45-6789"]
    assert [b.reason for b in bad] == ["sql_unbalanced"]


def test_on_duplicate_key_clause_ends_the_statement_cleanly() -> None:
    dump = (
        b"INSERT INTO p (navn, cpr) VALUES ('A','0101801234') ON DUPLICATE KEY UPDATE navn='x';"
        b"\nINSERT INTO p (navn, cpr) VALUES ('B','0202802345');"
    )
    with _open(dump) as stream:
        records, bad = stream.read_all()
    assert not bad
    assert [r.cpr for r in records] == ["0101801234", "0202802345"]


def test_large_extended_insert_crosses_read_chunks() -> None:
    count = 40_000  # ~2 MB in long statements: tuples and strings cut at chunk edges
    statements = [
        "INSERT INTO `p` (`navn`,`cpr`,`notat`) VALUES "
        + ",".join(
            f"('Person \\'{i}\\'','{i:010d}','{'x' * (i % 97)}')" for i in range(k, k + 5000)
        )
        + ";\n"
        for k in range(0, count, 5000)
    ]
    with _open("".join(statements).encode()) as stream:
        records, bad = stream.read_all()
    assert not bad
    assert len(records) == count
    assert records[-1].cpr == f"{count - 1:010d}"
    assert records[31_337].full_name == "Person '31337'"
    assert records[97].categories == Category.NATIONAL_ID  # empty note
    assert records[98].categories == Category.NATIONAL_ID | Category.FREE_TEXT


def test_statement_without_tuples_does_not_swallow_the_next_one() -> None:
    dump = (
        b"INSERT INTO p (cpr) VALUES;\n"
        b"INSERT INTO p (cpr) VALUES ('0101801234');\n"
        b"INSERT INTO p (cpr) VALUES nonsense here;\n"
        b"INSERT INTO p (cpr) VALUES ('0202802345');\n"
    )
    with _open(dump) as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234", "0202802345"]
    assert bad == [BadRow("sql_syntax", 2, "")]
