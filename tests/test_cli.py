"""The `fedscope` command as a user runs it (a real subprocess, the installed entry point)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import require_file

FEDSCOPE = [sys.executable, "-m", "fedscope.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str, data_root: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("FEDSCOPE_DATA_DIR", None)
    if data_root is not None:
        env["FEDSCOPE_DATA_DIR"] = str(data_root)
    proc = subprocess.run([*FEDSCOPE, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def test_version_and_help():
    assert "fedscope" in run("--version").stdout
    assert "data" in run("--help").stdout


def test_every_command_module_imports_on_its_own():
    # Each in a fresh interpreter: a circular import only shows when a module is loaded first.
    modules = sorted(p.stem for p in (ROOT / "src" / "fedscope" / "cli").glob("*_commands.py"))
    assert "train_commands" in modules and "deploy_commands" in modules
    for name in modules:
        proc = subprocess.run(
            [sys.executable, "-c", f"import fedscope.cli.{name}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"


def test_stats_json_agrees_with_readme(data_root):
    require_file(data_root, "amazon-food-kitchen/testdata_new.txt")
    st = json.loads(
        run("data", "stats", "food-kitchen", "--format", "json", data_root=data_root).stdout
    )
    assert st["users"] == 16_579
    assert [d["items"] for d in st["domains"]] == [29_207, 34_886]
    assert st["protocol"] == "c2dsr-derived-loo"


def test_user_errors_are_one_clear_line_not_a_traceback(tmp_path):
    p = run("data", "stats", "no-such-set", check=False)
    assert p.returncode == 2
    assert "unknown data set 'no-such-set'" in p.stderr and "Traceback" not in p.stderr
    p = run("data", "stats", "food-kitchen", "--data-dir", str(tmp_path), check=False)
    assert p.returncode == 2 and "missing" in p.stderr and "Traceback" not in p.stderr


def test_a_refused_train_command_leaves_no_half_run(tmp_path, monkeypatch):
    """A mistyped method or a missing semantic store is refused before anything is written, so
    the corrected command can use the same --run-dir (it used to say "already holds a run")."""
    small = [
        "--set",
        'data.options={"n_users": 120, "n_items": 60}',
        "--set",
        "federation.rounds=1",
    ]
    run_dir, store = tmp_path / "run", tmp_path / "items-only"
    sizes = ["--set", "n_users=120", "--set", "n_items=60"]
    run("augment", "--dataset", "synthetic", *sizes, "--side", "items", "--out", str(store))
    for bad, message in (
        ("method=sasrek", "unknown method 'sasrek'; known methods: fedcsr, fedscope,"),
        (f"semantics.store={tmp_path / 'no-store'}", "manifest.json: not found"),
        (f"semantics.store={store}", "the store has no user features (semantics.users=true)"),
    ):
        p = run("train", *small, "--set", bad, "--run-dir", str(run_dir), check=False)
        err = " ".join(p.stderr.split())
        assert p.returncode == 2 and message in err and "Traceback" not in err, err
        assert not run_dir.exists()
    # A failure while the run is being written takes back only what this call wrote.
    from fedscope.config import load_config
    from fedscope.experiments import runner

    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "save_partitioning", disk_full)
    with pytest.raises(OSError, match="No space left"):
        runner.prepare_run(load_config(None, small[1::2]), run_dir)
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]
    monkeypatch.undo()
    assert runner.prepare_run(load_config(None, small[1::2]), run_dir) == run_dir
    assert (run_dir / runner.CONFIG_FILE).is_file() and (run_dir / "notes.txt").is_file()


def test_train_takes_clients_from_an_assignment_file(tmp_path):
    """partition.scheme=file: a bad file is refused before anything is written, with its file
    and line; a good one gives the clients it names, with their names in partition.json."""
    from fedscope.config import load_config
    from fedscope.experiments import runner

    sets = ['data.options={"n_users": 120, "n_items": 60}', "federation.rounds=1"]
    sets += ["partition.scheme=file", "partition.n_clients=3"]
    clients = tmp_path / "clients.csv"
    rows = [f"user-{u:06d},{('north', 'south', 'west')[u % 3]}" for u in range(120)]
    clients.write_text("user,client\n" + "\n".join([*rows[:50], "user-999999,north", *rows[50:]]))
    run_dir = tmp_path / "run"
    args = [a for s in sets for a in ("--set", s)]
    p = run(
        "train", *args, "--set", f"partition.file={clients}", "--run-dir", str(run_dir), check=False
    )
    err = " ".join(p.stderr.split())
    assert p.returncode == 2 and "Traceback" not in err, err
    assert f"{clients}:52: user 'user-999999' is not a user of the data set" in err
    assert not run_dir.exists()
    clients.write_text("user,client\n" + "\n".join(rows))
    runner.prepare_run(load_config(None, [*sets, f"partition.file={clients}"]), run_dir)
    stored = json.loads((run_dir / runner.PARTITION_FILE).read_text())
    assert [c["name"] for c in stored["clients"]] == ["north", "south", "west"]
    assert [len(c["users"]) for c in stored["clients"]] == [40, 40, 40]
    assert json.loads((run_dir / runner.RUN_FILE).read_text())["n_clients"] == 3


def test_validate_reports_each_problem_and_fails(data_root, tmp_path):
    src = require_file(data_root, "amazon-food-kitchen/validdata_new.txt")
    broken = tmp_path / "validdata_new.txt"
    lines = src.read_text().split("\n")
    lines[1] = lines[1].replace("|", "#", 1)  # malformed token on line 2
    lines[3] = ""  # blank line in the middle -> line 4
    broken.write_text("\n".join(lines))
    p = run("data", "validate", str(broken), check=False)
    assert p.returncode == 1
    assert f"{broken}:2:" in p.stderr.replace("\n", "")
    assert f"{broken}:4:" in p.stderr.replace("\n", "")
    assert "2 problem(s)" in p.stderr
    ok = run("data", "validate", str(src.parent), check=False)
    assert ok.returncode == 0 and "no problems" in ok.stdout


@pytest.mark.slow
def test_floors_json(data_root, tmp_path):
    require_file(data_root, "amazon-food-kitchen/testdata_new.txt")
    out = tmp_path / "floors.json"
    run("floors", "food-kitchen", "--out", str(out), data_root=data_root)
    results = json.loads(out.read_text())
    by = {(r["scorer"], r["mode"]): r for r in results}
    assert by[("random", "sampled")]["metrics"]["overall"]["HR@10"] == pytest.approx(
        0.01, abs=0.003
    )
    assert by[("popularity", "sampled")]["metrics"]["Food"]["HR@10"] > 0.10
    assert all(r["protocol"] == "c2dsr-derived-loo" for r in results)


@pytest.mark.parametrize(
    "script, args",
    [
        ("compare_methods.py", ["--data", "food-kitchen", "--root", "{tmp}/runs", "--seeds", "0"]),
        ("privacy_utility.py", ["--root", "{tmp}/rq6", "--eps", "4", "--only-plan"]),
    ],
)
def test_bench_scripts_report_a_missing_data_root_in_one_line(tmp_path, script, args):
    env = dict(os.environ)
    env.pop("FEDSCOPE_DATA_DIR", None)
    env.pop("FEDSCOPE_DEBUG", None)
    repo = Path(__file__).resolve().parents[1]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    p = subprocess.run(
        [sys.executable, str(repo / "bench" / script), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "needs a data root" in p.stderr and "FEDSCOPE_DATA_DIR" in p.stderr
