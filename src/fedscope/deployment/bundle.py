"""Node bundles: what one client machine holds, and nothing of anyone else's.

After :func:`fedscope.experiments.runner.prepare_run`, :func:`export_node_bundles` writes,
for every client k, a directory ``<run_dir>/nodes/node-<k>/``::

    node.json            format, partition id, and the run's *public* federation numbers
                         (K, the size bound S, the SecAgg+ clipping range)
    config.json          the run's configuration (no data paths of the coordinator)
    dataset/             a CrossDomainDataset of client k's users only, users re-indexed
                         0..|U_k|-1, in fedscope.data.cache's format; the item catalogue
                         (domains, item keys and attributes) is public and kept whole
    partition.json       client k's partition alone (its users, as re-indexed, its domains)
    privacy_plan.json    client k's row of the privacy plan (privacy runs only)
    semantics/           item f_A (public) and client k's users' f_A, re-indexed (runs with
                         semantics configured)
    privacy/             client k's DP ledger, written by the node during the run

Other clients' users, sizes and budgets never enter a bundle: the size bound S and the
SecAgg+ range are run-wide public numbers the server announces anyway. The bundle is the
unit to copy to a client machine in a real deployment (docs/deployment.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.config import ExperimentConfig
from fedscope.data import cache as data_cache
from fedscope.data import load_dataset
from fedscope.data.dataset import CrossDomainDataset, EvalSplit
from fedscope.data.errors import DataError, Problem
from fedscope.data.partition import ClientPartition, Partitioning, load_partitioning
from fedscope.federation.run_dir import CONFIG_FILE
from fedscope.privacy.alignment import client_alignment_path
from fedscope.privacy.plan import PLAN_FILE, PrivacyPlan, load_plan
from fedscope.semantics.schemas import Status
from fedscope.semantics.store import MANIFEST, SemanticStore, SidePart
from fedscope.training.task import PARTITION_FILE, RecommendationTask

BUNDLE_FORMAT = 1
NODES_DIR = "nodes"
NODE_FILE = "node.json"
DATASET_DIR = "dataset"
SEMANTICS_DIR = "semantics"


@dataclass(frozen=True)
class NodeInfo:
    """``node.json``: which client a bundle is, and the run's public federation numbers."""

    partition_id: int
    n_clients: int  # K
    size_bound: int  # S, the public bound on |U_k| the clients encode with
    secagg_clipping_range: float
    n_users: int  # |U_k|: this client's own size (never sent in the clear)
    semantics: bool  # the bundle has a semantics/ store
    privacy: bool  # the bundle has this client's privacy plan
    dataset_fingerprint: str  # of the whole data set the bundle was cut from
    format: int = BUNDLE_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"


def node_dir(run_dir: Path, partition_id: int) -> Path:
    return Path(run_dir) / NODES_DIR / f"node-{partition_id}"


def read_node_info(bundle: Path) -> NodeInfo:
    """``node.json`` of a bundle; a DataError names the file when it is missing or wrong."""
    path = Path(bundle) / NODE_FILE
    if not path.is_file():
        raise DataError(
            [Problem(path, None, "not a node bundle (no node.json); export it with fedscope")]
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError([Problem(path, exc.lineno, f"not valid JSON: {exc.msg}")]) from exc
    fields = {f.name for f in dataclasses.fields(NodeInfo)}
    if not isinstance(raw, dict) or set(raw) != fields:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataError([Problem(path, None, f"expected the keys {sorted(fields)}, got {got}")])
    if raw["format"] != BUNDLE_FORMAT:
        raise DataError(
            [Problem(path, None, f"bundle format {raw['format']}, this fedscope reads 1")]
        )
    return NodeInfo(**raw)


# --- cutting one client's data out of the whole data set ----------------------------------------


def restrict_dataset(
    dataset: CrossDomainDataset, users: np.ndarray, domains: tuple[int, ...], tag: str
) -> CrossDomainDataset:
    """The data set as client (``users``, ``domains``) holds it.

    Users are re-indexed 0..len(users)-1 in the order of ``users`` (sorted user indices);
    their sequences keep their order and keep only items of ``domains`` (a by-domain client
    does not hold its users' other domains). Evaluation instances whose target is in
    ``domains`` are kept with their cut-offs moved to the filtered sequences; instances
    left with an empty history are dropped. The item catalogue is kept whole (public).
    """
    users = np.asarray(users, dtype=np.int64)
    new_index = np.full(dataset.n_users, -1, dtype=np.int64)
    new_index[users] = np.arange(users.shape[0])
    seqs = np.nonzero(new_index[dataset.seq_user] >= 0)[0]
    keep_domain = np.isin(np.arange(dataset.n_domains), domains)
    items_parts, times_parts, offsets, train_len = [], [], [0], []
    kept_before: dict[int, np.ndarray] = {}  # old sequence -> kept items before each position
    new_seq = np.full(dataset.n_sequences, -1, dtype=np.int64)
    for row, s in enumerate(seqs):
        s = int(s)
        items = dataset.sequence(s)
        keep = keep_domain[dataset.domain_of(items)]
        cumulative = np.concatenate([[0], np.cumsum(keep)])
        kept_before[s] = cumulative
        items_parts.append(items[keep])
        times_parts.append(dataset.sequence_times(s)[keep])
        offsets.append(offsets[-1] + int(keep.sum()))
        train_len.append(int(cumulative[dataset.train_len[s]]))
        new_seq[s] = row

    def split_of(split: EvalSplit) -> EvalSplit:
        mine = (new_seq[split.seq] >= 0) & keep_domain[dataset.domain_of(split.target)]
        idx = np.nonzero(mine)[0]
        cutoff = np.array(
            [int(kept_before[int(split.seq[i])][split.cutoff[i]]) for i in idx], dtype=np.int64
        )
        visible = cutoff >= 1
        idx, cutoff = idx[visible], cutoff[visible]
        return EvalSplit(new_seq[split.seq[idx]], cutoff, split.target[idx].astype(np.int64))

    def concat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    restricted = CrossDomainDataset(
        name=dataset.name,
        protocol=dataset.protocol,
        protocol_note=dataset.protocol_note,
        domains=list(dataset.domains),
        user_keys=[dataset.user_keys[int(u)] for u in users],
        seq_user=new_index[dataset.seq_user[seqs]].astype(np.int64),
        seq_offsets=np.array(offsets, dtype=np.int64),
        items=concat(items_parts),
        times=concat(times_parts),
        train_len=np.array(train_len, dtype=np.int64),
        valid=split_of(dataset.valid),
        test=split_of(dataset.test),
        user_attributes={k: [v[int(u)] for u in users] for k, v in dataset.user_attributes.items()},
        dropped=dict(dataset.dropped),
        notes=list(dataset.notes),
        fingerprint=f"{dataset.fingerprint}/{tag}",
    )
    restricted.check_consistency()
    return restricted


# --- export --------------------------------------------------------------------------------------


def export_node_bundles(run_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write ``nodes/node-<k>/`` for every client of the prepared run in ``run_dir``.

    Loads the whole data set once (the coordinator has it: it prepared the run). Returns
    the bundle directories in partition order.
    """
    run_dir = Path(run_dir)
    config = ExperimentConfig.model_validate_json((run_dir / CONFIG_FILE).read_text())
    if config.federation.regime != "federated":
        raise ValueError(
            f"{run_dir / CONFIG_FILE}: federation.regime is {config.federation.regime!r}; "
            "only federated runs are deployed to nodes"
        )
    dataset = load_dataset(config.data.name, config.data.data_dir, **config.data.options)
    partitioning = load_partitioning(run_dir / PARTITION_FILE)
    plan = load_plan(run_dir) if config.privacy.enabled else None
    # The public numbers come from the task the ServerApp builds, so both sides agree.
    full_task = RecommendationTask(config, dataset, partitioning, _plan_privatiser(plan, run_dir))
    public = full_task.settings()
    semantics = full_task.semantics
    store_identity = _store_identity(config) if semantics is not None else {}
    out = []
    for part in partitioning.clients:
        target = node_dir(run_dir, part.client_id)
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} already exists (pass overwrite=True to replace)")
            shutil.rmtree(target)
        target.mkdir(parents=True)
        tag = f"client-{part.client_id:04d}"
        mine = restrict_dataset(dataset, part.users, part.domains, tag)
        data_cache.save(mine, target / DATASET_DIR)
        own = ClientPartition(part.client_id, np.arange(part.users.shape[0]), part.domains)
        (target / PARTITION_FILE).write_text(
            Partitioning(partitioning.scheme, partitioning.seed, (own,)).to_json()
        )
        if plan is not None:
            row = plan.clients[part.client_id]
            (target / PLAN_FILE).write_text(dataclasses.replace(plan, clients=(row,)).to_json())
        if config.federation.exchange_representations:
            # positions count partition rows, so the run's file is the node's as it is
            mine_aligned = client_alignment_path(target, part.client_id)
            mine_aligned.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(client_alignment_path(run_dir, part.client_id), mine_aligned)
        if semantics is not None:
            _write_node_semantics(target / SEMANTICS_DIR, semantics, mine, part, store_identity)
        node_config = config.model_copy(
            update={
                "data": config.data.model_copy(update={"data_dir": None}),
                "semantics": config.semantics.model_copy(update={"store": None}),
            }
        )
        (target / CONFIG_FILE).write_text(node_config.model_dump_json(indent=2))
        info = NodeInfo(
            partition_id=part.client_id,
            n_clients=partitioning.n_clients,
            size_bound=public.size_bound,
            secagg_clipping_range=public.secagg_clipping_range,
            n_users=int(part.users.shape[0]),
            semantics=semantics is not None,
            privacy=plan is not None,
            dataset_fingerprint=dataset.fingerprint,
        )
        (target / NODE_FILE).write_text(info.to_json())
        out.append(target)
    return out


def _plan_privatiser(plan: PrivacyPlan | None, run_dir: Path) -> Any:
    if plan is None:
        return None
    from fedscope.privacy.client import DpPrivatiser

    # Only read for the SecAgg+ range here; nothing is privatised, no ledger is written.
    return DpPrivatiser(plan, run_dir, 0)


def _store_identity(config: ExperimentConfig) -> dict[str, Any]:
    assert config.semantics.store is not None
    manifest = json.loads((Path(config.semantics.store) / MANIFEST).read_text())
    # begin() writes the data set's own head fields; the rest says how the features were made
    head = {"format", "dataset", "fingerprint", "n_items", "n_users", "dim", "parts"}
    return {k: v for k, v in manifest.items() if k not in head}


def _write_node_semantics(
    folder: Path,
    features: Any,
    mine: CrossDomainDataset,
    part: ClientPartition,
    identity: dict[str, Any],
) -> None:
    store = SemanticStore(folder)
    store.begin(mine, {**identity, "cut_from": features.manifest.get("fingerprint")}, features.dim)
    if features.item_features is not None:
        store.write_part("items", _side(features.item_features, features.item_mask))
    if features.user_features is not None:
        rows = np.asarray(part.users)
        store.write_part("all", _side(features.user_features[rows], features.user_mask[rows]))


def _side(values: np.ndarray, mask: np.ndarray) -> SidePart:
    # Statuses beyond "has features or not" stay in the coordinator's store.
    status = np.where(mask, Status.VALID, Status.NA).astype(np.int8)
    return SidePart(values.astype(np.float32), mask.astype(bool), status)
