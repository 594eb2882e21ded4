"""Two-process DistributedDataParallel training on CPU (gloo), launched with torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def test_two_process_gloo_training(toy_dataset, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "liverview.model.train_cli", str(toy_dataset), "--out", str(run), "--arch", "tiny_cnn",
               "--input-size", "32", "--epochs", "2", "--batch-size", "4", "--no-baseline"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    # Both ranks ran, in one gloo group, one intra-op thread each, and both trained on their shard.
    assert "rank 0/2 started on cpu" in output and "rank 1/2 started on cpu" in output
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["status"] == "finished"
    ranks = sorted(info["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["threads"] == 1 and r["samples_trained"] > 0 for r in ranks)
    # 18 training lesions, 2 ranks x batches of 4 (DistributedSampler gives each rank 9; the last,
    # incomplete batch is dropped), 2 epochs.
    assert ranks[0]["samples_trained"] == ranks[1]["samples_trained"] == 16

    # Rank 0 wrote the checkpoint, the history, the report and the bundle; nobody else logged to the file.
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and not any(k.startswith("module.") for k in checkpoint["model"])
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(h["world_size"] == 2 for h in history)
    assert (run / "bundle" / "weights.pt").is_file() and (run / "report" / "report.md").is_file()
    log_text = (run / "train.log").read_text()
    assert "[rank 0]" in log_text and "[rank 1]" not in log_text
