"""Which FHIR identifier systems and telecom points hold which identifier.

A FHIR Patient has no columns: a CPR number is an ``identifier`` whose
``system`` says it is one, and exporters do not agree on the system. The
built-in list holds what is in use in Denmark:

* ``urn:oid:1.2.208.176.1.2`` — the CPR register's OID, what DK Core
  prescribes; ``http://www.cpr.dk/cpr-systemet`` — the URI the same
  NamingSystem lists; and the NamingSystem *URLs* that exporters put in
  ``system`` by mistake (``http://hl7.dk/fhir/core/NamingSystem/cpr``,
  ``http://ehealth.sundhed.dk/fhir/NamingSystem/cpr``);
* the health sector's replacement numbers, which are CPR keys too:
  X-eCPR ``urn:oid:1.2.208.176.1.6.1.1`` and D-eCPR
  ``urn:oid:1.2.208.176.1.6.1.3`` with its regional sub-OIDs;
* ``http://hl7.org/fhir/sid/us-ssn`` for US social security numbers.

Systems are compared case-insensitively, ``https`` as ``http``, without a
trailing slash. An identifier typed ``MR`` (v2-0203) is an MRN whatever its
system, one typed ``NNDNK`` a CPR number. Everything else is *unknown*:
counted per system so a hospital is told, and mapped in the mapping file::

    "fhir": {
      "identifier_systems": {"http://hospital-a.example/mrn": "mrn",
                             "http://hospital-a.example/pas": "ignore"},
      "mrn_facilities": {"http://hospital-a.example/mrn": "Hospital A"},
      "telecom": {"system:other": "phone", "use:old": "ignore"}
    }

``identifier_systems`` maps a system to ``cpr``, ``ssn``, ``mrn``,
``patient_id`` or ``ignore`` (overriding the built-in list);
``mrn_facilities`` names the facility whose MRNs a system holds (MRNs match
only within a facility, so it must be spelt as the leak's facility);
``telecom`` maps a ContactPoint ``system:<code>`` or ``use:<code>`` to
``phone``, ``email`` or ``ignore`` (a ``use`` rule wins over a ``system``
rule; by default ``email`` is an e-mail and ``phone``/``sms`` a phone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from breachmatch.columns.headers import display_name

IGNORE = "ignore"

CPR_SYSTEMS: tuple[str, ...] = (
    "urn:oid:1.2.208.176.1.2",
    "http://www.cpr.dk/cpr-systemet",
    "http://hl7.dk/fhir/core/NamingSystem/cpr",
    "http://ehealth.sundhed.dk/fhir/NamingSystem/cpr",
    "urn:oid:1.2.208.176.1.6.1.1",
    "urn:oid:1.2.208.176.1.6.1.3",
    "urn:oid:1.2.208.176.1.6.1.3.177",
    "urn:oid:1.2.208.176.1.6.1.3.179",
    "urn:oid:1.2.208.176.1.6.1.3.181",
    "urn:oid:1.2.208.176.1.6.1.3.183",
    "urn:oid:1.2.208.176.1.6.1.3.187",
)
SSN_SYSTEMS: tuple[str, ...] = ("http://hl7.org/fhir/sid/us-ssn",)
#: v2-0203 identifier type codes that say what an identifier is, whatever its system.
TYPE_CODES = {"MR": "mrn", "NNDNK": "cpr"}

IDENTIFIER_TARGETS = ("cpr", "ssn", "mrn", "patient_id", IGNORE)
TELECOM_TARGETS = ("phone", "email", IGNORE)
_DEFAULT_TELECOM = {"system:email": "email", "system:phone": "phone", "system:sms": "phone"}
_KEYS = ("identifier_systems", "mrn_facilities", "telecom")


class FhirMappingError(ValueError):
    """A ``fhir`` section that cannot be used; the message names the key."""


def system_key(system: str) -> str:
    """The comparison form of an identifier system URI."""
    key = system.strip().casefold().rstrip("/")
    return "http://" + key[len("https://") :] if key.startswith("https://") else key


_BUILT_IN: dict[str, str] = {
    **{system_key(s): "cpr" for s in CPR_SYSTEMS},
    **{system_key(s): "ssn" for s in SSN_SYSTEMS},
}


def _string_map(section: object, name: str) -> dict[str, str]:
    if not isinstance(section, dict) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in section.items()
    ):
        raise FhirMappingError(f"mapping file: fhir.{name} must be an object of strings")
    return dict(section)


def _checked(entries: dict[str, str], allowed: tuple[str, ...], name: str) -> dict[str, str]:
    for key, target in entries.items():
        if target not in allowed:
            raise FhirMappingError(
                f"mapping file: fhir.{name}[{display_name(key)!r}]: target must be one of "
                f"{', '.join(allowed)}"
            )
    return entries


@dataclass(frozen=True)
class FhirMapping:
    """Identifier systems and telecom points → record fields (None: ignore)."""

    identifier_systems: Mapping[str, str] = field(default_factory=dict)
    mrn_facilities: Mapping[str, str] = field(default_factory=dict)
    telecom: Mapping[str, str] = field(default_factory=dict)
    _systems: dict[str, str] = field(init=False, repr=False, compare=False)
    _facilities: dict[str, str] = field(init=False, repr=False, compare=False)
    _telecom: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        systems = {**_BUILT_IN, **{system_key(k): v for k, v in self.identifier_systems.items()}}
        facilities = {system_key(k): v.strip() for k, v in self.mrn_facilities.items()}
        object.__setattr__(self, "_systems", systems)
        object.__setattr__(self, "_facilities", facilities)
        object.__setattr__(self, "_telecom", {**_DEFAULT_TELECOM, **self.telecom})

    @classmethod
    def from_document(cls, section: object) -> FhirMapping:
        """Validate the mapping file's ``fhir`` section (see the module docstring)."""
        if not isinstance(section, dict):
            raise FhirMappingError("mapping file: 'fhir' must be an object")
        for key in section:
            if key not in _KEYS:
                raise FhirMappingError(
                    f"mapping file: unknown key fhir.{display_name(str(key))} "
                    f"(expected {', '.join(_KEYS)})"
                )
        systems = _string_map(section.get("identifier_systems", {}), "identifier_systems")
        telecom = _string_map(section.get("telecom", {}), "telecom")
        for key in telecom:
            if not key.startswith(("system:", "use:")):
                raise FhirMappingError(
                    f"mapping file: fhir.telecom[{display_name(key)!r}]: "
                    "keys are system:<code> or use:<code>"
                )
        return cls(
            identifier_systems=_checked(systems, IDENTIFIER_TARGETS, "identifier_systems"),
            mrn_facilities=_string_map(section.get("mrn_facilities", {}), "mrn_facilities"),
            telecom=_checked(telecom, TELECOM_TARGETS, "telecom"),
        )

    def identifier_field(self, system: str | None, type_codes: list[str]) -> str | None:
        """The field an identifier fills: a target name, "ignore", or None when unknown."""
        if system is not None:
            found = self._systems.get(system_key(system))
            if found is not None:
                return found
        for code in type_codes:
            if code in TYPE_CODES:
                return TYPE_CODES[code]
        return None

    def mrn_facility(self, system: str | None) -> str | None:
        """The facility configured for MRNs of `system`, if any."""
        return self._facilities.get(system_key(system)) if system else None

    def telecom_field(self, system: object, use: object) -> str | None:
        """ "phone", "email", or None for a ContactPoint that holds neither (or is ignored)."""
        target = self._telecom.get(f"use:{use}") if isinstance(use, str) else None
        if target is None and isinstance(system, str):
            target = self._telecom.get(f"system:{system}")
        return None if target in (None, IGNORE) else target

    def describe(self) -> list[tuple[str, str]]:
        """(source, target) pairs for `inspect`: the configured rules, then the built-in ones."""
        rows = [(f"identifier[system={s}]", t) for s, t in self.identifier_systems.items()]
        rows += [(f"identifier[system={s}]", "cpr") for s in CPR_SYSTEMS]
        rows += [(f"identifier[system={s}]", "ssn") for s in SSN_SYSTEMS]
        rows += [(f"identifier[type={code}]", t) for code, t in TYPE_CODES.items()]
        rows += [(f"telecom[{k}]", t) for k, t in self._telecom.items()]
        return rows
