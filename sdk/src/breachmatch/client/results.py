"""What a check found: plain, immutable values for the CLI, reports and callers.

A match names a patient by the hospital's own ``patient_id`` and says which
of its match keys (kinds only, never values) were found in which breach, how
strong that is, and which data categories the breach exposed for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from breachmatch.identifiers import Strength


@dataclass(frozen=True)
class Match:
    patient_id: str
    breach_id: str
    #: Key kinds found in the breach, in `KeyKind` order ("cpr", "email", …).
    matched_keys: tuple[str, ...]
    #: "strong" when any strong key (cpr, ssn, mrn) matched, else "medium".
    strength: str
    #: Exposed categories (`Category` names), the OR of the matched entries' labels.
    categories: tuple[str, ...]

    @property
    def is_strong(self) -> bool:
        return self.strength == Strength.STRONG.value


@dataclass(frozen=True)
class BreachSummary:
    breach_id: str
    title: str
    organisation: str
    breach_date: str
    oprf_key_id: str
    patients_checked: int
    patients_matched: int
    strong: int
    medium: int
    #: Matched patients per exposed category name.
    categories: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    tenant: str
    patients_file: str
    generated_at: str
    #: Patients read from the export (rows that gave a patient record).
    patients_checked: int
    #: Rows the reader could not use.
    bad_rows: int
    #: Patients none of whose values gave a match key.
    patients_without_keys: int
    #: Distinct OPRF inputs of all patients (identical ones are evaluated once).
    match_keys: int
    #: Blinded elements sent to the matcher by this run (0 when all were cached).
    evaluations: int
    matches: tuple[Match, ...] = ()
    summaries: tuple[BreachSummary, ...] = ()

    def matches_for(self, breach_id: str) -> list[Match]:
        return [match for match in self.matches if match.breach_id == breach_id]
