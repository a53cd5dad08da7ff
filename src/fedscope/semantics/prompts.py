"""Prompt templates for item attribute enhancement (IAE) and user feature enhancement (UFE).

The wording follows the paper's Table 2. Every text that goes into a prompt or into the
sentence encoder is built here, from an allow-list of public item fields (title, year, genres,
category, brand) and, for users, from the items of their own interaction history. Nothing
about the user themself enters a prompt: no user id or source key, no name, no demographics,
no zip code, no timestamps. :func:`sanitize` also strips anything in an item field that looks
like contact data (e-mail addresses, URLs, long digit runs such as phone numbers).

``PROMPT_VERSION`` is part of every cache key: change it whenever a template, the field
allow-list or the history length changes, so no stale answer is served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedscope.semantics.schemas import Schema, item_kind

PROMPT_VERSION = "iae-ufe-v1"

# Public item fields a prompt may show, in the order shown.
ITEM_FIELDS = ("title", "year", "genres", "category", "brand")
MAX_FIELD_CHARS = 160  # per field: some Amazon titles are paragraphs of keywords
LLM_HISTORY_ITEMS = 10  # most recent items of a user shown to the generative model
ENCODER_HISTORY_ITEMS = 10  # most recent items of a user embedded by the encoder path
HISTORY_FIELD_CHARS = 60  # per field of an item inside a user's history

_NOUN = {
    "movie": ("movie", "movies"),
    "book": ("book", "books"),
    "food": ("food product", "food products"),
    "kitchen": ("kitchen product", "kitchen products"),
    "music": ("music album", "music albums"),
    "product": ("product", "products"),
}
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)+\b")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_LONG_DIGITS = re.compile(r"(?<![\w])(?:\+?\d[\d\s().-]{6,}\d)(?![\w])")


def sanitize(text: str) -> str:
    """Remove contact-like data and collapse whitespace; cap the length."""
    text = _EMAIL.sub(" ", text)
    text = _URL.sub(" ", text)
    # Seven or more digits in a row (with separators) are phone or account numbers, not years
    # or pack sizes.
    text = _LONG_DIGITS.sub(lambda m: m.group(0) if _is_short_number(m.group(0)) else " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:MAX_FIELD_CHARS].rstrip()


def _is_short_number(text: str) -> bool:
    return sum(c.isdigit() for c in text) < 7


@dataclass(frozen=True)
class ItemFacts:
    """The public fields of one item that a prompt may show."""

    domain: str
    fields: tuple[tuple[str, str], ...]  # (name, sanitized value), non-empty values only

    @property
    def has_text(self) -> bool:
        return bool(self.fields)

    @property
    def title(self) -> str:
        return dict(self.fields).get("title", "")

    def inline(self, max_chars: int = MAX_FIELD_CHARS) -> str:
        """``Title (1995; Comedy; Grocery > Tea)`` style, for lists of items."""
        values = {k: v[:max_chars].rstrip() for k, v in self.fields}
        title = values.pop("title", "untitled")
        extra = "; ".join(v.replace(";", ", ") for v in values.values())
        return f"{title} ({extra})" if extra else title


def item_facts(domain: str, attributes: Mapping[str, str]) -> ItemFacts:
    fields = []
    for name in ITEM_FIELDS:
        value = sanitize(attributes.get(name, "") or "")
        if value:
            fields.append((name, value))
    return ItemFacts(domain, tuple(fields))


@dataclass(frozen=True)
class ChatPrompt:
    system: str
    user: str

    def as_text(self) -> str:
        """One string for cache keys and for models without a system role."""
        return f"{self.system}\n\n{self.user}"


def item_prompt(facts: ItemFacts, schema: Schema) -> ChatPrompt:
    """IAE prompt (paper, Table 2, "Item Attribute")."""
    noun = _NOUN[item_kind(facts.domain)][0]
    shown = ", ".join(name for name, _ in facts.fields)
    described = "\n".join(f"{name}: {value}" for name, value in facts.fields)
    return ChatPrompt(
        system=f"You complete missing metadata for {_NOUN[item_kind(facts.domain)][1]}.",
        user=(
            f"For the given {noun} [{shown}], output the following JSON fields: "
            f"{schema.template()}\n"
            'Rules: Mark optional fields as "N/A"; follow strict schema; provide short factual '
            "values.\n"
            f"{noun.capitalize()}:\n{described}"
        ),
    )


def user_prompt(history: Sequence[ItemFacts], schema: Schema) -> ChatPrompt:
    """UFE prompt (paper, Table 2, "User Profile"): the user's recent items, nothing else.

    ``history`` is chronological; the most recent ``LLM_HISTORY_ITEMS`` with text are shown.
    """
    shown = [f for f in history if f.has_text][-LLM_HISTORY_ITEMS:]
    kinds = sorted({item_kind(f.domain) for f in shown}) or ["product"]
    what = " and ".join(_NOUN[k][0] for k in kinds)
    lines = "\n".join(f"- [{f.domain}] {f.inline(HISTORY_FIELD_CHARS)}" for f in shown)
    return ChatPrompt(
        system="You are a recommender data curator.",
        user=(
            f"Given the user's {what} history [domain, title, details], infer the following "
            f"JSON fields: {schema.template()}\n"
            "Rules: Follow schema; avoid PII; use concise and factual values.\n"
            f"History (oldest first):\n{lines}"
        ),
    )


def item_text(facts: ItemFacts) -> str:
    """What the sentence encoder embeds for an item: its public fields as one line."""
    noun = _NOUN[item_kind(facts.domain)][0]
    return f"{facts.domain} {noun}. " + ". ".join(f"{n}: {v}" for n, v in facts.fields)


def user_text(history: Sequence[ItemFacts]) -> str:
    """What the sentence encoder embeds for a user: the most recent items, newest first.

    Newest first because the encoder truncates long inputs at the end (256 word pieces); the
    history and each field are kept short because the encoder's cost grows with the length.
    """
    shown = [f for f in history if f.has_text][-ENCODER_HISTORY_ITEMS:]
    return "Recently: " + "; ".join(
        f"[{f.domain}] {f.inline(HISTORY_FIELD_CHARS)}" for f in reversed(shown)
    )


def with_attributes(base: str, rendered: str) -> str:
    """Encoder input of the LLM path: the entity's own text plus the generated attributes.

    The plain text keeps a useful vector when the small model's answer is poor.
    """
    return f"{base} | {rendered}" if rendered else base
