"""The multi-crop timing benchmark runs every setting it is given and tables them against the
first."""

import pytest
import torch

from benchmarks import multicrop
from benchmarks.training_step import make_step
from mp_contrastive.vision import SimCLRAugment


def test_a_tiny_run_tables_each_setting_against_the_first(capsys):
    multicrop.main(["--crops", "2+0", "2+2", "3+0", "--batch-size", "4", "--width", "2",
                    "--small-size", "12", "--repeats", "1", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    settings = [row.split("|")[1].strip() for row in rows]
    assert settings == ["2 global + 0 small", "2 global + 2 small", "3 global + 0 small"]
    ratios = [float(row.split("|")[3]) for row in rows]
    assert ratios[0] == 1.0 and all(ratio > 0 for ratio in ratios)


def test_small_views_without_their_augmentation_are_named():
    with pytest.raises(ValueError, match="small_augment"):
        make_step(torch.nn.Identity(), torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                  SimCLRAugment(), 0, num_small_views=2)
