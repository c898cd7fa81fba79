"""The paper's Figure 1 claims, asserted on the synthetic experiment (examples/synthetic_dynamics.py)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "synthetic_dynamics.py"


def _load():
    spec = importlib.util.spec_from_file_location("examples_synthetic_dynamics", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


sd = _load()


@pytest.fixture(scope="module")
def default_run():
    return sd.simulate(sd.Config(seed=0))


def test_alignment_drives_all_pairwise_distances_to_zero(default_run):
    """With a few cross-class edges the whole graph is connected: alignment alone collapses
    every feature to one point (oversmoothing / complete collapse)."""
    curve = default_run["curves"]["alignment"]
    assert default_run["graph"]["lambda2"] > 0
    assert curve["mean_pairwise_distance"][-1] < 0.05 * curve["mean_pairwise_distance"][0]
    assert curve["intra_class_distance"][-1] < 0.01
    assert curve["uniformity"][-1] > -0.05  # 0 = all features equal


def test_uniformity_keeps_features_spread(default_run):
    curve = default_run["curves"]["uniformity"]
    assert min(curve["mean_pairwise_distance"]) > 0.95 * curve["mean_pairwise_distance"][0]
    assert curve["uniformity"][-1] <= curve["uniformity"][0]
    assert curve["class_distance_ratio"][-1] > 0.9  # no clustering either


def test_contrastive_clusters_classes_and_keeps_them_apart(default_run):
    curves = default_run["curves"]
    contrastive = curves["contrastive"]
    assert contrastive["intra_class_distance"][-1] < 0.4
    assert contrastive["inter_class_distance"][-1] > 1.4  # 4 classes spread around the circle
    assert contrastive["class_distance_ratio"][-1] < 0.25
    # stable "even after long iterations": nothing changes in the second half
    half = len(contrastive["class_distance_ratio"]) // 2
    assert abs(contrastive["class_distance_ratio"][-1] - contrastive["class_distance_ratio"][half]) \
        < 0.02
    assert contrastive["inter_class_distance"][-1] > 10 * curves["alignment"]["inter_class_distance"][-1]
    # and it moves towards the Proposition 3 equilibrium, unlike the other two updates
    assert contrastive["equilibrium_tv"][-1] < contrastive["equilibrium_tv"][0] - 0.1
    assert contrastive["equilibrium_tv"][-1] < min(curves["alignment"]["equilibrium_tv"][-1],
                                                   curves["uniformity"]["equilibrium_tv"][-1])


def test_measured_shrinkage_never_violates_proposition2(default_run):
    prop = default_run["proposition2"]
    assert prop["violations"] == 0
    assert prop["max_ratio_over_bound"] <= 1 + 1e-9
    assert prop["max_ratio_over_bound"] > 0.99  # the bound is nearly attained: it is tight
    assert all(0 < lam <= 2 for lam in prop["lambda2"])


def test_stacked_self_attention_lowers_uniformity(default_run):
    layers = default_run["self_attention"]["uniformity"]
    attention, uniformity = layers["self_attention"], layers["uniformity_update"]
    assert attention[-1] > attention[0] + 0.5
    assert all(b >= a - 1e-9 for a, b in zip(attention, attention[1:], strict=False))
    assert uniformity[-1] <= uniformity[0]


def test_label_preserving_graph_keeps_classes_apart_under_alignment():
    """Without cross-class edges each class collapses to its own point: alignment never bridges
    disconnected parts (lambda_2 = 0 for the whole graph), and Proposition 2 holds on it."""
    run = sd.simulate(sd.Config(seed=1, noise_edges=0, intra_prob=(0.3,), steps=120,
                                nodes_per_class=16, attention_layers=5, prop2_steps=20))
    curve = run["curves"]["alignment"]
    assert run["graph"]["lambda2"] == 0.0
    assert curve["intra_class_distance"][-1] < 1e-3
    assert curve["inter_class_distance"][-1] > 0.5
    assert run["proposition2"]["violations"] == 0
    assert "with_noise_edges_max_ratio_over_bound" not in run["proposition2"]


def test_command_line_writes_png_and_json_deterministically(tmp_path):
    argv = ["--seed", "3", "--steps", "30", "--nodes-per-class", "8", "--num-classes", "3",
            "--intra-prob", "0.5", "--noise-edges", "2", "--prop2-steps", "5",
            "--attention-layers", "5", "--dim", "3"]
    results = sd.main(argv + ["--out", str(tmp_path / "a")])
    png = (tmp_path / "a" / "synthetic_dynamics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads((tmp_path / "a" / "synthetic_dynamics.json").read_text())
    assert saved["config"]["seed"] == 3 and saved["config"]["snapshot_steps"] == [0, 10, 30]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()}
    again = sd.simulate(sd.Config(**config))
    assert json.dumps(again) == json.dumps(results)  # bit-identical on CPU
    other = sd.simulate(sd.Config(**{**config, "seed": 4}))
    assert other["curves"] != results["curves"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"alpha": 0.7}, "alpha"),
    ({"dim": 4}, "dim"),
    ({"intra_prob": (0.5, 0.5)}, "intra_prob"),
    ({"noise_edges": -1}, "noise_edges"),
    ({"snapshot_steps": (0, 999)}, "snapshot_steps"),
])
def test_bad_config_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sd.Config(**kwargs)
