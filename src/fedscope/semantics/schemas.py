"""JSON schemas of the generated attributes, validation of an answer, and repair to "N/A".

One schema per item *kind* (movie, book, food, kitchen, music, and a generic product for
anything else) and one per user *kind* (the paper's movie profile, and a general profile for
histories that mix kinds). The movie schemas are the fields of the paper's Table 2; the others
are our choices of the same size and style.

An answer goes through :func:`validate_answer`:

* it parses and every field matches the schema exactly: ``valid``;
* it parses but some field is missing, of the wrong type, too long, a placeholder such as
  ``"..."`` or an echo of the item's own title: that field becomes ``"N/A"`` (or is cut
  down) and the answer is ``repaired``;
* it does not parse, is not an object, or nothing usable is left: ``na``, every field
  ``"N/A"``.

The grammar already constrains a llama.cpp answer to the schema, so ``repaired`` and ``na``
mostly come from answers cut off at the token limit, from a user-supplied model served without
a grammar, or from the small default model copying placeholders. Nothing here raises on a bad
answer: one bad answer can never stop a run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

NA = "N/A"
SCHEMA_VERSION = 1
MAX_STRING_LENGTH = 60  # characters; caps keep a small model from running away
MAX_LIST_ITEMS = 4

# Ways of saying "not known": normalised to "N/A" without counting as a repair.
_NA_SYNONYMS = frozenset(
    {
        "n/a",
        "na",
        "n.a.",
        "none",
        "null",
        "nil",
        "unknown",
        "not available",
        "not applicable",
        "not known",
        "not specified",
        "unspecified",
    }
)
# Template filler a small model copies instead of answering: a repair.
_JUNK = frozenset({"", "...", "…", "-", "--", "?", "string", "[...]", "value", "text"})


class Status(IntEnum):
    """Outcome per entity; stored as int8 next to the features."""

    PENDING = 0  # not processed (outside --limit, or outside the client)
    VALID = 1
    REPAIRED = 2
    NA = 3


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Literal["str", "list"]
    hint: str  # what the value is (documentation)
    numeric: bool = False  # a bare number is a plausible value (a year, a size, an age range)


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[FieldSpec, ...]
    version: int = SCHEMA_VERSION
    # (kept, cleaned): a value of list field ``cleaned`` that also appears in ``kept`` is
    # dropped (a user cannot both like and dislike a genre; the small model often says so).
    disjoint: tuple[tuple[str, str], ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def key(self) -> str:
        """Identity of the schema for cache keys: name, version and field layout."""
        layout = ",".join(f"{f.name}:{f.kind}" for f in self.fields)
        return f"{self.name}/v{self.version}/{layout}/{MAX_STRING_LENGTH}/{MAX_LIST_ITEMS}"

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema llama.cpp turns into a grammar: every field required, lengths capped."""
        props: dict[str, Any] = {}
        for f in self.fields:
            text = {"type": "string", "maxLength": MAX_STRING_LENGTH}
            if f.kind == "str":
                props[f.name] = text
            else:
                props[f.name] = {"type": "array", "items": text, "maxItems": MAX_LIST_ITEMS}
        return {
            "type": "object",
            "properties": props,
            "required": list(self.field_names),
            "additionalProperties": False,
        }

    def template(self) -> str:
        """The field list as the paper's prompts show it: ``{ "director": "", ... }``."""
        parts = [f'"{f.name}": ' + ('""' if f.kind == "str" else "[...]") for f in self.fields]
        return "{ " + ", ".join(parts) + " }"

    @cached_property
    def strict_model(self) -> type[BaseModel]:
        """Pydantic model an answer must satisfy, unchanged, to count as valid."""
        text = (str, Field(max_length=MAX_STRING_LENGTH))
        specs: dict[str, Any] = {}
        for f in self.fields:
            if f.kind == "str":
                specs[f.name] = text
            else:
                specs[f.name] = (
                    list[str],  # type: ignore[valid-type]
                    Field(max_length=MAX_LIST_ITEMS),
                )
        return create_model(  # type: ignore[call-overload, no-any-return]
            f"Strict_{self.name}",
            __config__=ConfigDict(extra="forbid", strict=True),
            **specs,
        )

    def all_na(self) -> dict[str, str | list[str]]:
        return {f.name: (NA if f.kind == "str" else []) for f in self.fields}


def _s(name: str, hint: str, numeric: bool = False) -> FieldSpec:
    return FieldSpec(name, "str", hint, numeric)


def _l(name: str, hint: str) -> FieldSpec:
    return FieldSpec(name, "list", hint)


# --- item schemas (IAE) -------------------------------------------------------------------------
ITEM_SCHEMAS: dict[str, Schema] = {
    # Table 2 of the paper, field for field.
    "movie": Schema(
        "movie",
        (
            _s("director", "director's name"),
            _s("country", "country of production"),
            _s("language", "original language"),
            _l("main_actors", "up to four lead actors"),
            _s("production_company", "studio"),
            _l("filming_locations", "places"),
            _s("audience_ratings", "N/A unless known", numeric=True),
        ),
    ),
    "book": Schema(
        "book",
        (
            _s("author", "author's name"),
            _s("genre", "main genre"),
            _l("sub_genres", "up to four sub-genres"),
            _s("language", "original language"),
            _s("publisher", "publisher"),
            _s("series", "series name or N/A"),
            _s("target_audience", "e.g. adults, young adults, children"),
            _l("themes", "up to four themes"),
        ),
    ),
    "food": Schema(
        "food",
        (
            _s("product_type", "e.g. tea, snack bar, spice"),
            _s("brand", "brand"),
            _s("cuisine", "cuisine or origin"),
            _l("flavor_profile", "e.g. sweet, spicy"),
            _l("dietary_tags", "e.g. organic, vegan, gluten-free"),
            _s("package_size", "size or count", numeric=True),
            _s("occasion", "e.g. breakfast, baking, snacking"),
        ),
    ),
    "kitchen": Schema(
        "kitchen",
        (
            _s("product_type", "e.g. skillet, blender, mug"),
            _s("brand", "brand"),
            _s("material", "main material"),
            _l("use_cases", "what it is used for"),
            _s("room", "e.g. kitchen, dining, bath"),
            _s("care", "e.g. dishwasher safe, hand wash"),
            _s("price_tier", "budget, mid-range or premium"),
        ),
    ),
    "music": Schema(
        "music",
        (
            _s("artist", "performer"),
            _s("genre", "main genre"),
            _l("sub_genres", "up to four sub-genres"),
            _s("era", "decade", numeric=True),
            _l("moods", "e.g. calm, energetic"),
            _s("language", "language of the lyrics"),
        ),
    ),
    "product": Schema(
        "product",
        (
            _s("product_type", "what the product is"),
            _s("brand", "brand"),
            _s("category", "shop category"),
            _l("use_cases", "what it is used for"),
            _s("target_audience", "who buys it"),
            _s("price_tier", "budget, mid-range or premium"),
        ),
    ),
}

# --- user schemas (UFE) ---------------------------------------------------------------------------
USER_SCHEMAS: dict[str, Schema] = {
    # Table 2 of the paper, field for field.
    "movie": Schema(
        "user-movie",
        (
            _s("age_range", "e.g. 25-34", numeric=True),
            _s("gender", "or N/A"),
            _l("liked_genres", "up to four"),
            _l("disliked_genres", "up to four"),
            _s("social_tendencies", "short phrase"),
            _s("social_relationships", "short phrase"),
            _s("preferred_activities", "short phrase"),
            _s("viewing_environment", "e.g. home, cinema"),
            _l("future_interests", "up to four"),
            _s("language", "language"),
        ),
        disjoint=(("liked_genres", "disliked_genres"),),
    ),
    # The paper's profile for histories that are not only movies: genres become categories,
    # and the "consumption patterns" and "cross-domain interests" its text names get a field.
    "general": Schema(
        "user-general",
        (
            _s("age_range", "e.g. 25-34", numeric=True),
            _s("gender", "or N/A"),
            _l("liked_categories", "up to four"),
            _l("disliked_categories", "up to four"),
            _s("social_tendencies", "short phrase"),
            _s("social_relationships", "short phrase"),
            _s("preferred_activities", "short phrase"),
            _s("consumption_environment", "e.g. home cooking, commuting"),
            _s("consumption_patterns", "short phrase"),
            _l("cross_domain_interests", "up to four"),
            _l("future_interests", "up to four"),
            _s("language", "language"),
        ),
        disjoint=(("liked_categories", "disliked_categories"),),
    ),
}

# Domain names the loaders use, mapped to an item kind. MovieLens' derived "Thrill"/"Heart"
# domains are both movies; XMarket's markets and HVIDEO's domains fall back to "product".
_KIND_BY_DOMAIN = {
    "movie": "movie",
    "movies": "movie",
    "movies & tv": "movie",
    "thrill": "movie",
    "heart": "movie",
    "book": "book",
    "books": "book",
    "food": "food",
    "grocery": "food",
    "kitchen": "kitchen",
    "home & kitchen": "kitchen",
    "music": "music",
}


def item_kind(domain_name: str) -> str:
    return _KIND_BY_DOMAIN.get(domain_name.strip().lower(), "product")


def item_schema(domain_name: str) -> Schema:
    return ITEM_SCHEMAS[item_kind(domain_name)]


def user_schema(domain_names: list[str] | tuple[str, ...]) -> Schema:
    """The paper's movie profile when every domain holds movies, else the general profile."""
    kinds = {item_kind(d) for d in domain_names}
    return USER_SCHEMAS["movie" if kinds == {"movie"} else "general"]


# --- validation -----------------------------------------------------------------------------------


@dataclass
class ValidatedAnswer:
    values: dict[str, str | list[str]]
    status: Status
    problems: list[str] = field(default_factory=list)
    parsed: bool = True  # False: no JSON object could be read (worth a retry)

    def known_fields(self) -> dict[str, str | list[str]]:
        return {k: v for k, v in self.values.items() if not is_na(v)}


def is_na(value: str | list[str]) -> bool:
    return value == NA or value == []


def _clean_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _na_kind(text: str) -> str | None:
    """ "synonym" for a way of saying N/A, "junk" for template filler, None for a real value."""
    t = text.strip().lower()
    if t in _NA_SYNONYMS:
        return "synonym"
    if t in _JUNK or not t.strip(" .…-_*"):
        return "junk"
    return None


def _close_truncated(text: str) -> Any:
    """Parse a JSON object that was cut off (the token limit hit mid-answer): close the open
    string and brackets; failing that, drop the last partial member and try again."""
    for _ in range(8):
        stack: list[str] = []
        in_string = escaped = False
        for ch in text:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                stack.append("}" if ch == "{" else "]")
            elif ch in "}]" and stack:
                stack.pop()
        candidate = text + ('"' if in_string else "") + "".join(reversed(stack))
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            cut = text.rfind(",")
            if cut <= 0:
                break
            text = text[:cut]
    raise ValueError("unparseable JSON: cut off and could not be closed")


def _extract_object(raw: str) -> tuple[Any, str | None]:
    """(the JSON value in ``raw``, how it had to be repaired: None, "wrapped" or "truncated").

    Models without a grammar like to wrap JSON in prose or code fences: the span from the
    first ``{`` to the last ``}`` is tried next, then an answer cut off at the token limit is
    closed.
    """
    try:
        return json.loads(raw), None
    except (json.JSONDecodeError, TypeError, ValueError):
        pass
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    if end > start:
        try:
            return json.loads(raw[start : end + 1]), "wrapped"
        except json.JSONDecodeError:
            pass
    return _close_truncated(raw[start:]), "truncated"


# Problem kinds, the first word of every problem string ("kind: field: detail").
PROBLEM_KINDS = (
    "no_answer",
    "unparseable",
    "not_object",
    "missing",
    "wrong_type",
    "too_long",
    "placeholder",
    "echo",
    "extra_field",
    "wrapped",
    "truncated",
    "contradiction",
)
_PYDANTIC_KIND = {
    "missing": "missing",
    "extra_forbidden": "extra_field",
    "string_too_long": "too_long",
    "too_long": "too_long",
}


def problem_kind(problem: str) -> str:
    return problem.split(":", 1)[0]


_NUMBER = re.compile(r"^[\d\s.,:/%+-]+$")


def _repair_text(
    value: Any, echoes: set[str], numeric: bool = False
) -> tuple[str, tuple[str, str] | None]:
    """(repaired string value, (problem kind, detail) or None)."""
    if isinstance(value, bool) or value is None:
        return NA, ("wrong_type", f"expected a string, got {json.dumps(value)}")
    if isinstance(value, int | float):
        if not numeric:
            return NA, ("wrong_type", f"expected a string, got the number {value}")
        return _clean_text(str(value)), ("wrong_type", "number turned into a string")
    if isinstance(value, list):
        parts = [_repair_text(v, echoes, numeric)[0] for v in value]
        parts = [p for p in parts if p != NA]
        if not parts:
            return NA, ("wrong_type", "expected a string, got a list without usable values")
        return _cut(", ".join(parts)), ("wrong_type", "list joined into a string")
    if not isinstance(value, str):
        return NA, ("wrong_type", f"expected a string, got {type(value).__name__}")
    text = _clean_text(value)
    kind = _na_kind(text)
    if kind == "synonym":
        return NA, None
    if kind == "junk":
        return NA, ("placeholder", repr(value))
    squeezed = text.lower().replace(" ", "")
    if len(squeezed) >= 6 and len(set(squeezed)) <= 2:  # "1000000000", "aaaaaa"
        return NA, ("placeholder", f"{_cut(text)!r} is a run of one character")
    if not numeric and _NUMBER.match(text):  # "1", "2" for social tendencies and the like
        return NA, ("placeholder", f"bare number {text!r}")
    if text.lower() in echoes:
        return NA, ("echo", f"{value!r} repeats the input")
    if len(text) > MAX_STRING_LENGTH:
        return _cut(text), ("too_long", f"cut to {MAX_STRING_LENGTH} characters")
    return text, None


def _cut(text: str) -> str:
    return text[:MAX_STRING_LENGTH].rstrip()


def _repair_list(
    value: Any, echoes: set[str], numeric: bool = False
) -> tuple[list[str], tuple[str, str] | None]:
    problem = None
    if isinstance(value, str):
        if _na_kind(value) == "synonym":
            return [], None
        value = re.split(r"[,;]", value)
        problem = ("wrong_type", "string split into a list")
    if not isinstance(value, list):
        return [], ("wrong_type", f"expected a list, got {type(value).__name__}")
    out: list[str] = []
    for v in value:
        text, p = _repair_text(v, echoes, numeric)
        problem = problem or p
        if text != NA and text not in out:
            out.append(text)
    if len(out) > MAX_LIST_ITEMS:
        out = out[:MAX_LIST_ITEMS]
        problem = problem or ("too_long", f"cut to {MAX_LIST_ITEMS} entries")
    return out, problem


def validate_answer(
    raw: str | None, schema: Schema, echoes: tuple[str, ...] | list[str] = ()
) -> ValidatedAnswer:
    """Parse and validate one generated answer; never raises.

    ``echoes`` are input strings (the item's own title) that carry no new information when
    the model copies them into a field; such a value becomes "N/A". Problems are strings
    ``"kind: field: detail"`` with ``kind`` one of :data:`PROBLEM_KINDS`.
    """
    if raw is None:
        return ValidatedAnswer(schema.all_na(), Status.NA, ["no_answer: -: none"], parsed=False)
    try:
        obj, how = _extract_object(raw)
    except ValueError as exc:
        return ValidatedAnswer(schema.all_na(), Status.NA, [f"unparseable: -: {exc}"], False)
    if not isinstance(obj, dict):
        return ValidatedAnswer(
            schema.all_na(),
            Status.NA,
            [f"not_object: -: expected a JSON object, got {type(obj).__name__}"],
            parsed=False,
        )
    echo_set = {e.strip().lower() for e in echoes if e and e.strip()}
    found: dict[tuple[str, str], str] = {}  # (kind, field) -> detail; one entry per pair
    if how == "wrapped":
        found[("wrapped", "-")] = "JSON object cut out of surrounding text"
    elif how == "truncated":
        found[("truncated", "-")] = "answer cut off; open strings and brackets closed"
    try:
        schema.strict_model.model_validate(obj)
    except ValidationError as exc:
        for err in exc.errors():
            where = str(err["loc"][0]) if err["loc"] else "-"
            found.setdefault((_PYDANTIC_KIND.get(err["type"], "wrong_type"), where), err["msg"])
    values: dict[str, str | list[str]] = {}
    for f in schema.fields:
        if f.name not in obj:
            values[f.name] = NA if f.kind == "str" else []
            continue
        if f.kind == "str":
            values[f.name], p = _repair_text(obj[f.name], echo_set, f.numeric)
        else:
            values[f.name], p = _repair_list(obj[f.name], echo_set, f.numeric)
        if p:
            # The repair step knows better than pydantic what was wrong with this field.
            for key in [k for k in found if k[1] == f.name]:
                del found[key]
            found[(p[0], f.name)] = p[1]
    for kept, cleaned in schema.disjoint:
        keep = {v.lower() for v in values[kept]}
        left = [v for v in values[cleaned] if v.lower() not in keep]
        if len(left) < len(values[cleaned]):
            found[("contradiction", cleaned)] = f"values also in {kept} dropped"
            values[cleaned] = left
    problems = [f"{kind}: {name}: {detail}" for (kind, name), detail in found.items()]
    if all(is_na(v) for v in values.values()):
        # Nothing survived the closing of a cut-off answer: as good as unparseable.
        return ValidatedAnswer(values, Status.NA, problems, parsed=how != "truncated")
    return ValidatedAnswer(values, Status.REPAIRED if problems else Status.VALID, problems)


def render_values(values: dict[str, str | list[str]]) -> str:
    """Known attributes as one line of text for the sentence encoder (N/A fields left out)."""
    parts = []
    for name, value in values.items():
        if is_na(value):
            continue
        text = ", ".join(value) if isinstance(value, list) else value
        parts.append(f"{name.replace('_', ' ')}: {text}")
    return "; ".join(parts)
