"""Decoding weights from Flower messages, and the server's mean over client vectors.

Both sit on every round's path (the server decodes one update per sampled client), so they
were rewritten for speed (bench/speed.py rounds); these tests pin them to the slow, obvious
versions they replaced: Flower's ``parameters_to_ndarrays`` and a mean over stacked arrays.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays

from fedscope.federation import wire
from fedscope.federation.strategy import mean_of_vectors


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(size=(70, 9)).astype(np.float32),
        np.asfortranarray(rng.normal(size=(4, 3))),  # float64, column-major
        np.arange(24, dtype=np.int64).reshape(2, 3, 4),
        np.array(2.5),  # shape ()
        np.zeros((0, 5), dtype=np.float32),
        np.arange(5, dtype=">f4"),  # big-endian
        np.array([0.125], dtype=np.float32),
    ]


def test_decoded_weights_equal_flowers_decoder() -> None:
    parameters = ndarrays_to_parameters(_arrays())
    ours = wire.parameters_to_weights(parameters)
    flowers = parameters_to_ndarrays(parameters)
    assert len(ours) == len(flowers)
    for got, want in zip(ours, flowers, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_decoded_weights_are_read_only_views() -> None:
    parameters = ndarrays_to_parameters(_arrays())
    first = wire.parameters_to_weights(parameters)[0]
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


def test_arrays_of_python_objects_are_refused() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        wire.parameters_to_weights(Parameters(tensors=[buffer.getvalue()], tensor_type="numpy"))


@pytest.mark.parametrize("cut", [-4, 4])
def test_arrays_whose_data_is_short_or_padded_are_refused(cut: int) -> None:
    blob = ndarrays_to_parameters([np.arange(6, dtype=np.float32)]).tensors[0]
    damaged = blob[:cut] if cut < 0 else blob + b"\0" * cut
    with pytest.raises(ValueError, match=f"carries {24 + cut} bytes of data, not the 24"):
        wire.parameters_to_weights(Parameters(tensors=[damaged], tensor_type="numpy"))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 33])
def test_mean_of_vectors_is_bit_identical_to_the_stacked_mean(n: int) -> None:
    rng = np.random.default_rng(n)
    vectors = [
        [
            (rng.normal(size=(40, 8)) * 10.0 ** rng.integers(-6, 4)).astype(np.float32),
            rng.normal(size=3),
            np.array([rng.uniform()], dtype=np.float32),
        ]
        for _ in range(n)
    ]
    stacked = [
        np.mean(np.stack([np.asarray(v[i], dtype=np.float64) for v in vectors]), axis=0)
        for i in range(3)
    ]
    got = mean_of_vectors(vectors)
    for g, s in zip(got, stacked, strict=True):
        assert g.dtype == np.float64
        assert np.array_equal(g, s)
    assert all(v[0].dtype == np.float32 for v in vectors)  # inputs left as they were


def test_mean_of_vectors_accepts_read_only_inputs() -> None:
    decoded = [wire.parameters_to_weights(ndarrays_to_parameters(_arrays()[:2])) for _ in range(3)]
    got = mean_of_vectors(decoded)
    np.testing.assert_allclose(got[0], decoded[0][0].astype(np.float64))


def test_mean_of_no_vectors_is_an_error() -> None:
    with pytest.raises(ValueError, match="no vectors"):
        mean_of_vectors([])
