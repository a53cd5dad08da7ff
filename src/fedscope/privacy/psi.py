"""Private set intersection (PSI) for inter-domain user alignment.

When the domains of one person live on different clients (platforms), those clients must
find the users they have in common without disclosing the identifiers they do not share.
FedSCOPE uses a PSI protocol for this (inter-domain alignment; without alignment the
inter-domain contrastive term is simply switched off). The cryptography is OpenMined's
``openmined-psi`` (ECDH-PSI: each identifier is hashed to an elliptic-curve point and
blinded with a party's secret exponent); this module only wraps it into two parties that
exchange plain ``bytes``, so the messages can travel over any transport.

Protocol (one round trip)::

    initiator (holds A, learns A ∩ B)            responder (holds B)
    request = create_request()         ------>
                                       <------   setup, response = respond(request)
    intersection_ids(setup, response)

Who learns what, for honest-but-curious parties:

* The **initiator** learns which of its own identifiers are also in B (up to false
  positives, at most ``fpr`` probability per run, see below) and, from the size of the
  setup message, roughly ``|B|`` (exactly ``|B|`` with the ``"raw"`` structure). It learns
  nothing about the elements of ``B \\ A``.
* The **responder** learns ``|A|`` (the request holds one blinded point per initiator
  identifier) and nothing else: not which identifiers are shared, not even how many.
* Neither message carries an identifier in plaintext; a party cannot invert the blinded
  points of the other without its secret key, which never leaves the party object.

A malicious initiator could put guessed identifiers into its request to test whether the
responder holds them; ``PsiResponder(max_initiator_set_size=...)`` bounds that.

Data structure: the responder encodes its blinded set as a Golomb-compressed set (GCS),
the library's default. Measured with 10k vs 10k identifiers at fpr 1e-9 (openmined-psi
2.0.6): setup message 56 kB for GCS, 78 kB for a Bloom filter, 350 kB raw; the request and
the response are 350 kB each whichever structure is used (one 33-byte point per initiator
identifier), and the run times are within noise of each other. GCS is the smallest at no
measurable cost; ``"raw"`` is exact (no false positives) but the largest, and reveals
``|B|`` exactly. All three can be chosen with ``structure=``.

False-positive rate: for GCS and Bloom filters, ``fpr`` is the library's bound on the
probability that a whole query (all of A) yields *any* identifier that is not in B. The
setup message grows only logarithmically in ``1 / fpr`` (about log2(|A| / fpr) bits per
responder identifier), so 1e-9 costs 5.6 bytes per responder identifier at |A| = 10k,
against 35 bytes per initiator identifier for request and response each. At 1e-9 one
expects a single false positive in a billion runs. That holds for GCS and raw in our tests,
but **not for openmined-psi 2.0.6's Bloom filter**: with |A| = 400, |B| = 300 and fpr 1e-9 it
returned an identifier outside B in 4 of 300 runs (`bench/psi_false_positives.py`), so
:func:`intersect` with ``structure="bloom_filter"`` can return a superset of the true
intersection. GCS is the default. :func:`align_clients` splits its ``fpr`` over all pairs
and also drops any identifier the responder does not hold (see there), so the alignment it
returns is exact whatever the structure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import private_set_intersection.python as psi
from google.protobuf.message import DecodeError

Structure = Literal["gcs", "bloom_filter", "raw"]
STRUCTURES: dict[str, psi.DataStructure] = {
    "gcs": psi.DataStructure.GCS,
    "bloom_filter": psi.DataStructure.BLOOM_FILTER,
    "raw": psi.DataStructure.RAW,
}
DEFAULT_FPR = 1e-9
DEFAULT_STRUCTURE: Structure = "gcs"

_Message = TypeVar("_Message", psi.ServerSetup, psi.Request, psi.Response)

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_STRUCTURE",
    "STRUCTURES",
    "AlignmentResult",
    "PsiInitiator",
    "PsiResponder",
    "PsiTranscript",
    "align_clients",
    "intersect",
]


@dataclass(frozen=True)
class PsiTranscript:
    """What one PSI run cost: message sizes in bytes and each party's compute time.

    ``*_seconds`` are wall-clock seconds spent inside each party's methods (hashing,
    elliptic-curve operations, (de)serialising), not transport time.
    """

    setup_bytes: int
    request_bytes: int
    response_bytes: int
    initiator_seconds: float
    responder_seconds: float
    fpr: float
    structure: str
    initiator_set_size: int
    responder_set_size: int
    intersection_size: int

    @property
    def total_bytes(self) -> int:
        return self.setup_bytes + self.request_bytes + self.response_bytes

    @property
    def total_seconds(self) -> float:
        return self.initiator_seconds + self.responder_seconds


def _validate_fpr(fpr: float) -> float:
    if not (isinstance(fpr, int | float) and 0.0 < float(fpr) < 1.0):
        raise ValueError(f"fpr (false-positive rate) must be in (0, 1), got {fpr!r}")
    return float(fpr)


def _validate_ids(ids: Sequence[str], owner: str) -> list[str]:
    """Check one party's identifiers: strings, non-empty, no duplicates."""
    if isinstance(ids, str | bytes):
        # A lone string is a Sequence[str] of characters: almost surely a caller's mistake.
        raise TypeError(f"{owner}: user identifiers must be a sequence of strings, got one string")
    checked = list(ids)
    first_position: dict[str, int] = {}
    for position, user_id in enumerate(checked):
        if not isinstance(user_id, str):
            raise TypeError(
                f"{owner}: user identifier at position {position} is a "
                f"{type(user_id).__name__} ({user_id!r}), not a str"
            )
        if user_id == "":
            raise ValueError(f"{owner}: user identifier at position {position} is the empty string")
        if user_id in first_position:
            raise ValueError(
                f"{owner}: duplicate user identifier {user_id!r} "
                f"(positions {first_position[user_id]} and {position})"
            )
        first_position[user_id] = position
    return checked


def _parse(message_type: type[_Message], payload: bytes, what: str) -> _Message:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"PSI {what} must be bytes, got {type(payload).__name__}")
    message = message_type()
    try:
        message.ParseFromString(bytes(payload))
    except DecodeError as error:
        raise ValueError(f"malformed PSI {what} ({len(payload)} bytes): {error}") from None
    return message


class PsiInitiator:
    """The party that learns the intersection (openmined-psi's "client").

    Holds its own identifiers and a fresh secret key. It sends one request (its blinded
    identifiers) and, from the responder's setup and response, learns which of its own
    identifiers the responder also holds; with ``reveal_intersection=False`` it learns only
    how many. It learns roughly ``|B|`` from the setup size and nothing about the
    responder's other identifiers. The secret key is never exposed.
    """

    def __init__(self, user_ids: Sequence[str], *, reveal_intersection: bool = True) -> None:
        self.user_ids: list[str] = _validate_ids(user_ids, "initiator")
        self.reveal_intersection = reveal_intersection
        self.seconds = 0.0
        self._party = psi.client.CreateWithNewKey(reveal_intersection)
        self._request_size: int | None = None

    def create_request(self) -> bytes:
        """The request message: one blinded point per identifier, in a random-looking form."""
        start = time.perf_counter()
        request = self._party.CreateRequest(self.user_ids).SerializeToString()
        self.seconds += time.perf_counter() - start
        self._request_size = len(self.user_ids)
        return request

    def _load_reply(self, setup: bytes, response: bytes) -> tuple[psi.ServerSetup, psi.Response]:
        if self._request_size is None:
            raise RuntimeError("create_request() must be called before processing a reply")
        setup_message = _parse(psi.ServerSetup, setup, "setup message")
        response_message = _parse(psi.Response, response, "response")
        # The library silently ignores missing points, which would hide a truncated message.
        n_points = len(response_message.encrypted_elements)
        if n_points != self._request_size:
            raise ValueError(
                f"PSI response holds {n_points} points for a request of {self._request_size}: "
                "it does not answer this initiator's request"
            )
        return setup_message, response_message

    def intersection_indices(self, setup: bytes, response: bytes) -> list[int]:
        """Positions (ascending) of this party's identifiers that the responder also holds."""
        if not self.reveal_intersection:
            raise RuntimeError(
                "this initiator was created with reveal_intersection=False: "
                "only intersection_size() is available"
            )
        start = time.perf_counter()
        setup_message, response_message = self._load_reply(setup, response)
        try:
            indices = self._party.GetIntersection(setup_message, response_message)
        except RuntimeError as error:
            raise ValueError(f"PSI reply rejected by openmined-psi: {error}") from None
        self.seconds += time.perf_counter() - start
        return sorted(indices)

    def intersection_ids(self, setup: bytes, response: bytes) -> list[str]:
        """This party's identifiers that the responder also holds, in input order."""
        return [self.user_ids[i] for i in self.intersection_indices(setup, response)]

    def intersection_size(self, setup: bytes, response: bytes) -> int:
        """How many of this party's identifiers the responder also holds."""
        start = time.perf_counter()
        setup_message, response_message = self._load_reply(setup, response)
        try:
            size = self._party.GetIntersectionSize(setup_message, response_message)
        except RuntimeError as error:
            raise ValueError(f"PSI reply rejected by openmined-psi: {error}") from None
        self.seconds += time.perf_counter() - start
        return int(size)


class PsiResponder:
    """The party that answers (openmined-psi's "server").

    Holds its own identifiers and a fresh secret key. From a request it learns only the
    size of the initiator's set (kept in :attr:`initiator_set_size`); it learns neither
    the intersection nor its size. Its reply is the setup message (its own blinded set in
    a compressed structure sized for the request) and the response (the initiator's
    points, blinded once more with the responder's key).
    """

    def __init__(
        self,
        user_ids: Sequence[str],
        *,
        fpr: float = DEFAULT_FPR,
        structure: Structure = DEFAULT_STRUCTURE,
        reveal_intersection: bool = True,
        max_initiator_set_size: int | None = None,
    ) -> None:
        if structure not in STRUCTURES:
            raise ValueError(
                f"unknown PSI data structure {structure!r}; choose one of {', '.join(STRUCTURES)}"
            )
        self.user_ids: list[str] = _validate_ids(user_ids, "responder")
        self.fpr = _validate_fpr(fpr)
        self.structure: Structure = structure
        self.reveal_intersection = reveal_intersection
        self.max_initiator_set_size = max_initiator_set_size
        self.initiator_set_size: int | None = None
        self.seconds = 0.0
        self._party = psi.server.CreateWithNewKey(reveal_intersection)

    def respond(self, request: bytes) -> tuple[bytes, bytes]:
        """Answer one request: returns ``(setup, response)``, both serialized."""
        start = time.perf_counter()
        request_message = _parse(psi.Request, request, "request")
        n_points = len(request_message.encrypted_elements)
        if self.max_initiator_set_size is not None and n_points > self.max_initiator_set_size:
            raise ValueError(
                f"PSI request holds {n_points} identifiers, more than the "
                f"{self.max_initiator_set_size} this responder accepts"
            )
        try:
            response = self._party.ProcessRequest(request_message).SerializeToString()
            # The fpr bound is for a query of the request's size; the library divides by it,
            # so an empty request is sized as one (it cannot match anything anyway).
            setup = self._party.CreateSetupMessage(
                self.fpr, max(n_points, 1), self.user_ids, STRUCTURES[self.structure]
            ).SerializeToString()
        except RuntimeError as error:
            raise ValueError(f"PSI request rejected by openmined-psi: {error}") from None
        self.initiator_set_size = n_points
        self.seconds += time.perf_counter() - start
        return setup, response


def intersect(
    initiator_ids: Sequence[str],
    responder_ids: Sequence[str],
    fpr: float = DEFAULT_FPR,
    *,
    structure: Structure = DEFAULT_STRUCTURE,
) -> tuple[list[str], PsiTranscript]:
    """Run both PSI parties in this process (what the simulation uses).

    Returns the initiator's identifiers that the responder also holds, in the initiator's
    input order, and the transcript (message sizes, each party's time). The result may
    contain a false positive with probability at most ``fpr`` (none with ``"raw"``).
    """
    initiator = PsiInitiator(initiator_ids)
    responder = PsiResponder(responder_ids, fpr=fpr, structure=structure)
    request = initiator.create_request()
    setup, response = responder.respond(request)
    shared = initiator.intersection_ids(setup, response)
    transcript = PsiTranscript(
        setup_bytes=len(setup),
        request_bytes=len(request),
        response_bytes=len(response),
        initiator_seconds=initiator.seconds,
        responder_seconds=responder.seconds,
        fpr=responder.fpr,
        structure=structure,
        initiator_set_size=len(initiator.user_ids),
        responder_set_size=len(responder.user_ids),
        intersection_size=len(shared),
    )
    return shared, transcript


@dataclass(frozen=True)
class AlignmentResult:
    """Which users each client shares with which other clients, and what finding out cost.

    ``shared_with[k][j]``: client k's identifiers that client j also holds, in k's input
    order; only partners with at least one shared user appear, every client appears as a
    key. ``overlapping_users[k]``: client k's identifiers held by at least one other
    client, in k's input order. ``transcripts[(i, j)]`` (i < j, i initiated) is the cost
    of each pair's run; ``false_positives_dropped`` counts identifiers a PSI run reported
    that the responder then did not confirm.
    """

    shared_with: dict[int, dict[int, list[str]]]
    overlapping_users: dict[int, list[str]]
    transcripts: dict[tuple[int, int], PsiTranscript] = field(repr=False)
    total_bytes: int
    total_seconds: float
    fpr_per_pair: float
    false_positives_dropped: int

    @property
    def n_pairs(self) -> int:
        return len(self.transcripts)


def align_clients(
    user_ids_by_client: Mapping[int, Sequence[str]],
    fpr: float = DEFAULT_FPR,
    *,
    structure: Structure = DEFAULT_STRUCTURE,
    skip_pair: Callable[[int, int], bool] | None = None,
) -> AlignmentResult:
    """Pairwise PSI among all clients: each unordered pair once, the lower client id initiates.

    Per pair the initiator learns the shared identifiers and the responder only the
    initiator's set size. The alignment is then made symmetric the way a deployment would:
    the initiator sends the shared identifiers to the responder, which keeps those it
    holds and confirms them back. This tells the responder nothing about the initiator's
    other users (except, with probability at most ``fpr``, a false positive, which the
    responder rejects here and which is counted in ``false_positives_dropped``), and
    makes the returned alignment exact.

    ``fpr`` bounds the probability that any pair's PSI run yields a false positive: each of
    the n pairs runs at ``fpr / n`` (union bound), which costs about log2(n) extra bits per
    responder identifier in the setup messages.

    Pairs where one client has no users are not run (nothing can be shared), nor pairs for
    which ``skip_pair(low, high)`` is true (e.g. two clients of the same single domain, which
    share no one under a by-domain split).
    """
    fpr = _validate_fpr(fpr)
    clients: dict[int, list[str]] = {}
    for client_id, ids in user_ids_by_client.items():
        if not isinstance(client_id, int) or isinstance(client_id, bool):
            raise TypeError(f"client ids must be ints, got {client_id!r}")
        clients[client_id] = _validate_ids(ids, f"client {client_id}")
    order = sorted(clients)
    pairs = [
        (low, high)
        for n, low in enumerate(order)
        for high in order[n + 1 :]
        if clients[low] and clients[high] and not (skip_pair and skip_pair(low, high))
    ]
    fpr_per_pair = fpr / max(len(pairs), 1)

    shared_with: dict[int, dict[int, list[str]]] = {k: {} for k in order}
    transcripts: dict[tuple[int, int], PsiTranscript] = {}
    false_positives = 0
    for low, high in pairs:
        reported, transcript = intersect(
            clients[low], clients[high], fpr_per_pair, structure=structure
        )
        transcripts[(low, high)] = transcript
        confirmed = set(reported).intersection(clients[high])
        false_positives += len(reported) - len(confirmed)
        if confirmed:
            shared_with[low][high] = [u for u in clients[low] if u in confirmed]
            shared_with[high][low] = [u for u in clients[high] if u in confirmed]

    overlapping_users: dict[int, list[str]] = {}
    for k in order:
        anywhere = set().union(*shared_with[k].values())
        overlapping_users[k] = [u for u in clients[k] if u in anywhere]
    return AlignmentResult(
        shared_with=shared_with,
        overlapping_users=overlapping_users,
        transcripts=transcripts,
        total_bytes=sum(t.total_bytes for t in transcripts.values()),
        total_seconds=sum(t.total_seconds for t in transcripts.values()),
        fpr_per_pair=fpr_per_pair,
        false_positives_dropped=false_positives,
    )
