"""Which column of a dump or export holds which identifier or kind of data.

Shared by ingest (leak dumps) and the hospital SDK (patient exports) so both
sides read "CPR-nr.", "Fødselsdato" or ``patient.contact.email`` the same way.

* `auto_target` — the Danish/English synonym table (`synonyms`).
* `ColumnMapping` — overrides from a JSON mapping file (`mapping`).
* `ColumnPlan` — the per-file compiled plan that turns cells into a
  `PersonRecord` with its exposure categories (`plan`).
"""

from breachmatch.columns.headers import display_name, header_key, looks_like_data
from breachmatch.columns.mapping import ColumnMapping, Decision, MappingError
from breachmatch.columns.plan import ColumnPlan
from breachmatch.columns.synonyms import auto_target
from breachmatch.columns.targets import Target

__all__ = [
    "ColumnMapping",
    "ColumnPlan",
    "Decision",
    "MappingError",
    "Target",
    "auto_target",
    "display_name",
    "header_key",
    "looks_like_data",
]
