"""The legacy fit wire layout (``fitins.*`` in, ``fitres.*`` out), in one place.

Flower's ``secaggplus_mod`` and the server's fit workflows (plain and SecAgg+) speak
the legacy FitIns/FitRes records, so the new-style ``@app.train`` handler reads and
writes that layout. This module is the only importer of Flower's
``recorddict_compat``; everything else goes through these helpers.
"""

from __future__ import annotations

import io
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import (
    arrayrecord_to_parameters,
    fitres_to_recorddict,
    parameters_to_arrayrecord,
    recorddict_to_fitins,
)

from fedscope.federation.task import Weights

FITINS_CONFIG = "fitins.config"
FITRES_PARAMETERS = "fitres.parameters"
FITRES_NUM_EXAMPLES = "fitres.num_examples"
FITRES_METRICS = "fitres.metrics"


def parameters_to_weights(parameters: Parameters) -> Weights:
    """The arrays of legacy ``Parameters``, as read-only views of its bytes (no copy).

    Flower's ``parameters_to_ndarrays`` copies every array out of its ``.npy`` bytes;
    for a model of tens of MB, received by the server once per sampled client and
    decoded on both sides, that copy was a sizeable part of a round. numpy's own
    format reader parses each header, and the data is then viewed where it lies.
    """
    return [_npy_view(blob) for blob in parameters.tensors]


def _npy_view(blob: bytes) -> np.ndarray:
    stream = io.BytesIO(blob)
    major, _ = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read_header(stream)
    if dtype.hasobject:
        raise ValueError("refusing an array of Python objects in a weights message")
    count = int(np.prod(shape, dtype=np.int64))
    # A short or padded blob means a corrupted or mismatched message: refuse it
    # rather than read past the data or silently drop the excess.
    have, need = len(blob) - stream.tell(), count * dtype.itemsize
    if have != need:
        raise ValueError(
            f"weights message array of shape {shape} and dtype {dtype} carries {have} bytes "
            f"of data, not the {need} it needs"
        )
    flat = np.frombuffer(blob, dtype=dtype, count=count, offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran_order else "C")


def read_fitins(msg: Message) -> tuple[Weights, dict[str, Scalar]]:
    """The global weights and the fit config a train message carries."""
    fitins = recorddict_to_fitins(msg.content, keep_input=True)
    return parameters_to_weights(fitins.parameters), dict(fitins.config)


def read_fit_config(msg: Message) -> dict[str, Scalar]:
    """Only the fit config of a train message (no weight deserialisation)."""
    return cast(dict[str, Scalar], dict(msg.content.config_records[FITINS_CONFIG]))


def fitres_reply(
    msg: Message, update: Weights, num_examples: int, metrics: dict[str, Scalar]
) -> Message:
    """A train reply in the FitRes layout (what ``secaggplus_mod`` expects to mask)."""
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters(update),
        num_examples=num_examples,
        metrics=metrics,
    )
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def get_update(reply: Message) -> Weights:
    record = reply.content.array_records[FITRES_PARAMETERS]
    return parameters_to_weights(arrayrecord_to_parameters(record, keep_input=True))


def set_update(reply: Message, update: Weights) -> None:
    reply.content.array_records[FITRES_PARAMETERS] = parameters_to_arrayrecord(
        ndarrays_to_parameters(update), keep_input=True
    )


def get_num_examples(reply: Message) -> int:
    return int(reply.content.metric_records[FITRES_NUM_EXAMPLES]["num_examples"])


def set_num_examples(reply: Message, num_examples: int) -> None:
    reply.content.metric_records[FITRES_NUM_EXAMPLES]["num_examples"] = num_examples


def get_metrics(reply: Message) -> dict[str, Scalar]:
    return cast(dict[str, Scalar], dict(reply.content.config_records[FITRES_METRICS]))


def add_metric(reply: Message, key: str, value: float) -> None:
    """Add one plaintext metric to a train reply (never under SecAgg+: see the client app)."""
    reply.content.config_records[FITRES_METRICS][key] = value


def runs_secaggplus(msg: Message) -> bool:
    """Whether the server drives this train message through the SecAgg+ protocol."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secure_round(msg: Message) -> bool:
    """Whether this train message's update goes to secure aggregation (SecAgg+ driving it,
    or the run configured for it): then only the parameters are masked, and no plaintext
    metric may be added to the reply."""
    return runs_secaggplus(msg) or bool(read_fit_config(msg).get("secagg", False))


def weights_to_record(weights: Weights) -> ArrayRecord:
    """The LegacyContext's parameter record for ``weights``."""
    return parameters_to_arrayrecord(ndarrays_to_parameters(weights), keep_input=True)


def record_to_weights(record: ArrayRecord) -> Weights:
    return parameters_to_weights(arrayrecord_to_parameters(record, keep_input=True))
