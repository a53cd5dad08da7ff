"""A method from another package, found through the ``fedscope.methods`` entry points.

The plugin is the example of ``docs/methods.md``, installed the way pip leaves a package: a
module and a ``.dist-info`` folder with its entry points on the path. It is trained federatedly
by the real command, so Flower's worker processes must find it too.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

FEDSCOPE = [sys.executable, "-m", "fedscope.cli"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
TINY = [
    'data.options={"n_users": 300, "n_items": 120}',
    "partition.n_clients=4",
    "federation.fraction=0.5",
    "federation.rounds=4",
    "eval.every=1",
    "train.batch_size=64",
    "train.lr=0.02",
]


def example_code() -> str:
    text = DOC.read_text()
    section = text[text.index("## A complete example") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def install(site: Path, dist: str, entry_points: dict[str, str], module: str | None) -> None:
    """What `pip install` leaves behind: the package, and metadata naming its entry points."""
    if module is not None:
        (site / "my_methods").mkdir(parents=True, exist_ok=True)
        (site / "my_methods" / "__init__.py").write_text("")
        (site / "my_methods" / "mean_pool.py").write_text(module)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[fedscope.methods]\n{lines}")


def fedscope(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250", PYTHONPATH=str(site))
    return subprocess.run(
        [*FEDSCOPE, *args], capture_output=True, text=True, env=env, timeout=600, cwd=site
    )


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def test_the_documented_plugin_trains_federatedly_through_the_command(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(
        site,
        "fedscope-mean-pool",
        {"mean-pool": "my_methods.mean_pool:MeanPoolMethod"},
        example_code(),
    )
    run_dir = tmp_path / "run"
    p = fedscope(site, "train", *sets([*TINY, "method=mean-pool"]), "--run-dir", str(run_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads((run_dir / "run.json").read_text())["method"] == "mean-pool"
    results = json.loads((run_dir / "results.json").read_text())
    model, floor = results["test"]["sampled"]
    assert model["scorer"] == "mean-pool (federated)" and floor["scorer"] == "popularity"
    assert all(math.isfinite(v) for v in model["metrics"]["overall"].values())
    # The clients trained it: their loss fell over the rounds, and the selected model is above
    # the popularity floor on the test set (0.45 against 0.24 when this was written).
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["client_train"]["loss"] for r in rounds]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert model["metrics"]["overall"]["HR@10"] > floor["metrics"]["overall"]["HR@10"] + 0.1

    listing = " ".join(fedscope(site, "methods").stdout.split())
    assert "mean-pool │ plugin (my_methods.mean_pool) │ mean of the history's item" in listing
    assert "sasrec │ fedscope │ SASRec per domain" in listing
    # The unknown-method message lists installed plugins with the built-in methods.
    p = fedscope(site, "train", *sets([*TINY, "method=mean-poll"]))
    assert p.returncode == 2
    assert "known methods: fedcsr, fedscope, fedscope-no-iidcl, gru4rec, mean-pool, sasrec" in (
        " ".join(p.stderr.split())
    )


def test_a_broken_plugin_is_refused_with_its_entry_point_named(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(
        site,
        "fedscope-broken",
        {
            "gone": "my_methods.not_there:Gone",
            "misnamed": "my_methods.mean_pool:MeanPoolMethod",
            "not-a-method": "my_methods.mean_pool:MeanPool",
        },
        example_code(),
    )
    expected = {
        "gone": "method plugin 'gone' (my_methods.not_there:Gone of fedscope-broken 0.1, entry "
        "point group 'fedscope.methods'): cannot be loaded: ModuleNotFoundError",
        "misnamed": "the class is named 'mean-pool'; its entry point must carry the same name",
        "not-a-method": "is not a subclass of fedscope.methods.Method",
    }
    for name, message in expected.items():
        run_dir = tmp_path / name
        p = fedscope(site, "train", *sets([*TINY, f"method={name}"]), "--run-dir", str(run_dir))
        err = " ".join(p.stderr.split())
        assert p.returncode == 2 and message in err and "Traceback" not in err, err
        assert not run_dir.exists()
    p = fedscope(site, "methods")  # listing loads every plugin: the broken one is named
    assert p.returncode == 2 and "method plugin 'gone'" in " ".join(p.stderr.split())
    # Built-in methods do not depend on a broken plugin being importable.
    from fedscope.experiments.suite.rq1_overall import registered_grid

    env_path = sys.path.copy()
    try:
        sys.path.insert(0, str(site))
        present, absent = registered_grid()
    finally:
        sys.path[:] = env_path
    assert present and not absent
