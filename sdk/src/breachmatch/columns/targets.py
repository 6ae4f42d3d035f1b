"""What a column can be mapped to: a record field or an exposure category.

A *field* target places the cell's raw string into `PersonRecord` (and, for
contact and national-id fields, implies that category). A *category* target
keeps nothing from the cell; it only records that this kind of data was
exposed for the person whenever the cell is non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from breachmatch.records import CONTACT_FIELDS, IDENTIFIER_FIELDS, Category

#: Field names a column may target, in record order.
FIELD_NAMES: tuple[str, ...] = IDENTIFIER_FIELDS + CONTACT_FIELDS

#: Category names a column may target as ``category:<name>``.
CATEGORY_NAMES: tuple[str, ...] = tuple(Category.legend())

CATEGORY_PREFIX = "category:"

_NO_CATEGORY = Category(0)

#: Fields whose presence means the dump exposed contact details / a national id.
_FIELD_CATEGORY: dict[str, Category] = {
    "email": Category.CONTACT,
    "phone": Category.CONTACT,
    "address": Category.CONTACT,
    "cpr": Category.NATIONAL_ID,
    "ssn": Category.NATIONAL_ID,
}


@dataclass(frozen=True, slots=True)
class Target:
    """A field (``field`` set) or a category-only column (``category`` set)."""

    field: str | None = None
    category: Category = _NO_CATEGORY

    @classmethod
    def of_field(cls, name: str) -> Target:
        if name not in FIELD_NAMES:
            raise ValueError(f"unknown field {name!r}")
        return cls(field=name, category=_FIELD_CATEGORY.get(name, _NO_CATEGORY))

    @classmethod
    def of_category(cls, category: Category) -> Target:
        return cls(field=None, category=category)

    @classmethod
    def parse(cls, spec: str) -> Target:
        """``"cpr"`` or ``"category:medication"``; `ValueError` names what is wrong."""
        if spec.startswith(CATEGORY_PREFIX):
            name = spec[len(CATEGORY_PREFIX) :]
            if name not in CATEGORY_NAMES:
                raise ValueError(f"unknown category; expected one of {', '.join(CATEGORY_NAMES)}")
            return cls.of_category(Category[name.upper()])
        if spec not in FIELD_NAMES:
            raise ValueError(
                f"unknown target; expected a field ({', '.join(FIELD_NAMES)}), "
                f"'{CATEGORY_PREFIX}<{'|'.join(CATEGORY_NAMES)}>' or 'ignore'"
            )
        return cls.of_field(spec)

    @property
    def label(self) -> str:
        """The spelling a mapping file uses for this target."""
        if self.field is not None:
            return self.field
        return CATEGORY_PREFIX + "+".join(self.category.names())
