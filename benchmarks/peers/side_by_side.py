"""Side-by-side speed of the same DANN task (benchmarks/peers/run_peer.py) in one run: a plain
PyTorch loop, skada, pytorch-adapt and tamebias, interleaved (round r runs every system once,
in an order rotated by r) and repeated over seeds, so machine noise hits all alike. The peers
are installed at pinned versions into a throwaway virtual environment that reuses this
machine's torch (``--system-site-packages``); a peer that does not install is skipped with
the reason. Writes the ``side_by_side`` key of benchmarks/results/speed.json and its section
of speed.md (rows share one ``comparison_id``).

    python benchmarks/peers/side_by_side.py [--steps 2000] [--seeds 0,1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_sections import merge_json, merge_markdown  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_peer.py"
# what each peer installs; skorch is skada.deep's own dependency, setuptools<81 keeps the
# pkg_resources that pytorch-adapt's torchmetrics 0.9.3 imports
PINS = {"skada": ["skada==0.6.0", "skorch==1.4.0"],
        "pytorch-adapt": ["pytorch-adapt==0.0.83", "setuptools<81"]}
DISTRIBUTIONS = {"skada": ["skada", "skorch", "POT"],
                 "pytorch-adapt": ["pytorch-adapt", "pytorch-metric-learning", "torchmetrics"]}


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def prepare_environment(venv: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Interpreter per system and the skip reason of each peer that failed to install."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
    interpreters = {"plain": sys.executable, "tamebias": sys.executable}
    skipped = {}
    for peer, pins in PINS.items():
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *pins],
                              capture_output=True, text=True)
        check = subprocess.run([str(python), "-W", "ignore", "-c",
                                {"skada": "import skada.deep",
                                 "pytorch-adapt": "import pytorch_adapt.hooks"}[peer]],
                               capture_output=True, text=True)
        if done.returncode or check.returncode:
            reason = (done.stderr or check.stderr).strip().splitlines() or ["unknown"]
            skipped[peer] = f"install failed: {reason[-1]}"
        else:
            interpreters[peer] = str(python)
    return interpreters, skipped


def versions(python: str, names: list[str]) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            f"{names!r}}}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def run_once(python: str, system: str, seed: int, steps: int, threads: int,
             data: Path) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    before = load()
    done = subprocess.run([python, str(RUNNER), system, "--seed", str(seed), "--steps",
                           str(steps), "--threads", str(threads), "--data", str(data)],
                          capture_output=True, text=True, env=environment)
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"system": system, "seed": seed, "error": tail[0]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(load_before=before, load_after=load())
    return row


def summarize(runs: list[dict], systems: list[str]) -> list[dict]:
    rows = []
    for system in systems:
        mine = [run for run in runs if run["system"] == system and "error" not in run]
        if not mine:
            continue
        speeds = [run["images_per_second"] for run in mine]
        accuracies = [100 * run["accuracy"] for run in mine]
        rows.append({
            "system": system, "method": "dann",
            "images_per_second": statistics.mean(speeds),
            "images_per_second_per_seed": speeds,
            "wall_seconds": statistics.mean(run["wall_seconds"] for run in mine),
            "train_seconds": statistics.mean(run["train_seconds"] for run in mine),
            "accuracy_mean": statistics.mean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "accuracy_per_seed": accuracies, "seeds": [run["seed"] for run in mine]})
    peers = [row["images_per_second"] for row in rows if row["system"] != "tamebias"]
    fastest = max(peers) if peers else None
    for row in rows:
        row["ratio_to_fastest_peer"] = row["images_per_second"] / fastest if fastest else None
        # within one round (one seed) the runs are minutes apart: the fairer ratio
        row["ratio_to_fastest_peer_per_seed"] = []
        for seed, speed in zip(row["seeds"], row["images_per_second_per_seed"], strict=True):
            round_peers = [run["images_per_second"] for run in runs if run["seed"] == seed
                           and run["system"] != "tamebias" and "error" not in run]
            row["ratio_to_fastest_peer_per_seed"].append(
                speed / max(round_peers) if round_peers else None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--systems", default="plain,skada,pytorch-adapt,tamebias")
    parser.add_argument("--venv", default="/tmp/tamebias-peers-venv")
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument("--rewrite", action="store_true",
                        help="rewrite the tables from the runs stored in speed.json; run nothing")
    arguments = parser.parse_args()
    if arguments.rewrite:
        stored = json.loads((Path(arguments.output) / "speed.json").read_text())["side_by_side"]
        stored.setdefault("systems", [row["system"] for row in stored["rows"]])
        write(stored, Path(arguments.output))
        return
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    systems = arguments.systems.split(",")
    interpreters, skipped = prepare_environment(Path(arguments.venv))
    pinned = {peer: versions(interpreters[peer], DISTRIBUTIONS[peer])
              for peer in PINS if peer in interpreters}
    systems = [system for system in systems if system in interpreters]
    data = Path(arguments.venv) / "mnist-usps-28.pt"
    comparison = f"dann-lenet-mnist-usps-{time.strftime('%Y%m%d-%H%M')}-{uuid.uuid4().hex[:6]}"
    runs = []
    for round_index, seed in enumerate(seeds):
        shift = round_index % len(systems)
        for system in systems[shift:] + systems[:shift]:
            row = run_once(interpreters[system], system, seed, arguments.steps,
                           arguments.threads, data)
            print(json.dumps(row), flush=True)
            runs.append(row)
    import torch

    record = {
        "comparison_id": comparison,
        "task": "dann, lenet (no norm), mnist->usps 28x28x1, batch 64+64, sgd 0.01 m0.9, "
                "no augmentation, last model",
        "steps": arguments.steps, "threads": arguments.threads, "seeds": seeds,
        "systems": systems, "runs": runs, "skipped": skipped, "versions": pinned,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write(record, Path(arguments.output))


def write(record: dict, output: Path) -> None:
    """Rows from the record's runs into speed.json and speed.md."""
    rows = summarize(record["runs"], record["systems"])
    for row in rows:
        row["comparison_id"] = record["comparison_id"]
    record["rows"] = rows
    merge_json(output / "speed.json", "side_by_side", record)

    def ratios(row):
        return " / ".join("-" if value is None else f"{value:.2f}"
                          for value in row["ratio_to_fastest_peer_per_seed"])

    runs, steps, threads = record["runs"], record["steps"], record["threads"]
    lines = [
        "## Side by side: the same DANN task in four systems "
        "(written by benchmarks/peers/side_by_side.py)", "",
        f"Comparison `{record['comparison_id']}` ({record['measured_at']}): {record['task']}; "
        f"{steps} steps per run, seeds {record['seeds']}, {threads} torch thread(s), "
        "runs interleaved (one per system per round, order rotated each round). images/s: "
        "source + target images over the training steps (loading and evaluation excluded); "
        "wall: the whole process. The per-seed ratio compares runs of the same round.", "",
        "| system | images/s (mean; per seed) | x fastest peer (mean; per seed) | wall s | "
        "target acc % (mean +- std) |", "|---|---|---|---|---|",
        *(f"| {row['system']} | {row['images_per_second']:.0f}; "
          + " / ".join(f"{speed:.0f}" for speed in row["images_per_second_per_seed"])
          + f" | {row['ratio_to_fastest_peer']:.2f}; {ratios(row)} | "
          f"{row['wall_seconds']:.0f} | {row['accuracy_mean']:.2f} +- "
          f"{row['accuracy_std']:.2f} |" for row in rows),
        "",
        "- versions: " + "; ".join(f"{peer}: " + ", ".join(f"{name} {version}" for name, version
                                                           in found.items())
                                   for peer, found in record["versions"].items()),
        "- load average (1, 5, 15 min) before each run: "
        + "; ".join(f"{run['system']} s{run['seed']}: {run.get('load_before', '?')}"
                    for run in runs),
        *(f"- skipped {peer}: {reason}" for peer, reason in record["skipped"].items()),
        *(f"- failed {run['system']} seed {run['seed']}: {run['error']}"
          for run in runs if "error" in run),
    ]
    merge_markdown(output / "speed.md", "side-by-side", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
