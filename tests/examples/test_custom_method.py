"""examples/custom_method.py: a method defined in the example, trained by the library's Trainer on
real CIFAR-10 (tiny settings), learns and feeds the dynamics monitor through its LossNodes."""

import importlib.util
import json
import math
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_method.py"


def _load():
    spec = importlib.util.spec_from_file_location("examples_custom_method", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_custom_method_trains_and_reports(data_root, tmp_path):
    _load().main(["--epochs", "2", "--train-subset", "512", "--batch-size", "128", "--width", "4",
                  "--dynamics-every", "2", "--seed", "0", "--data-root", str(data_root),
                  "--out", str(tmp_path), "--no-progress"])
    results = json.loads((tmp_path / "results.json").read_text())
    losses = results["step_loss"]
    assert len(losses) == 2 * 4 and all(math.isfinite(v) for v in losses)
    first, last = (epoch["loss"] for epoch in results["epochs"])
    assert last < first, (first, last)
    assert 0 <= results["epochs"][-1]["knn_top1"] <= 100
    # The method's LossNodes reached the monitor: a row at steps 0, 2, 4, 6, with the pairs'
    # alignment and the labels' class distances measured.
    rows = results["dynamics"]
    assert [row["step"] for row in rows] == [0, 2, 4, 6]
    assert all(math.isfinite(row["alignment"]) and math.isfinite(row["class_distance_ratio"])
               for row in rows)
    assert (tmp_path / "checkpoint.pt").is_file()
