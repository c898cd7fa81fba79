"""Checkpoint files: written whole with a checksum next to them; a corrupt, truncated, foreign or
unverifiable file is refused with a ValueError naming it, never a traceback from torch.load."""

import hashlib
import os
import subprocess

import pytest
import torch

from mp_contrastive.vision.checkpoint import (
    FORMAT,
    SettingsMismatch,
    checksum_path,
    compare_settings,
    load_checkpoint,
    save_checkpoint,
)


def state(value: float = 1.0) -> dict:
    return {"format": FORMAT, "weights": torch.full((64,), value), "settings": {"lr": 0.1}}


def test_round_trip_and_a_checksum_file_next_to_it(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(1.0), path)
    save_checkpoint(state(2.0), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
    assert torch.equal(load_checkpoint(path)["weights"], torch.full((64,), 2.0))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "other"])
def test_a_damaged_checkpoint_is_refused_by_its_checksum(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(), path)
    data = path.read_bytes()
    if damage == "flip":  # finite weights changed silently: only the checksum can tell
        index = data.index(torch.full((64,), 1.0).numpy().tobytes())
        data = data[:index] + torch.full((1,), 3.0).numpy().tobytes() + data[index + 4:]
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    else:  # a valid checkpoint, but not the one the checksum was written for
        other = tmp_path / "other.pt"
        save_checkpoint(state(5.0), other)
        data = other.read_bytes()
    path.write_bytes(data)
    with pytest.raises(ValueError, match="does not match its checksum") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_checksum_says_how_to_write_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(), path)
    checksum_path(path).unlink()
    with pytest.raises(ValueError, match="no checksum file") as error:
        load_checkpoint(path)
    assert "sha256sum checkpoint.pt > checkpoint.pt.sha256" in str(error.value)
    subprocess.run("sha256sum checkpoint.pt > checkpoint.pt.sha256", shell=True, check=True,
                   cwd=tmp_path)  # as the message says
    assert load_checkpoint(path)["format"] == FORMAT


def with_checksum(path, data: bytes) -> None:
    """``data`` at ``path`` with a matching checksum: what the checksum cannot catch."""
    path.write_bytes(data)
    checksum_path(path).write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


@pytest.mark.parametrize("content,message", [
    (b"not a zip file", "cannot be read as a checkpoint"),
    ("list", "is not a checkpoint written by this trainer"),
    ("format1", "has checkpoint format 1"),
])
def test_unreadable_foreign_and_old_checkpoints_are_named(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    if isinstance(content, bytes):
        with_checksum(path, content)
    else:
        save_checkpoint({"format": 1} if content == "format1" else {"x": [1, 2]}, path)
    with pytest.raises(ValueError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_kill_between_the_checksum_and_the_rename_leaves_a_pair_that_verifies(tmp_path,
                                                                                 monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(1.0), path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the checksum file, before the checkpoint's rename

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (
        killed() if str(dst) == str(path) else real_replace(src, dst)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"], torch.full((64,), 1.0))  # the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
    save_checkpoint(state(3.0), path)
    assert torch.equal(load_checkpoint(path)["weights"], torch.full((64,), 3.0))


def test_every_differing_setting_is_listed(tmp_path):
    stored = {"temperature": 0.2, "attention": "official", "lr": 0.1, "old": 1}
    now = {"temperature": 0.5, "attention": "paper", "lr": 0.1, "new": (1, 2)}
    with pytest.raises(SettingsMismatch) as error:
        compare_settings(stored, now, tmp_path / "checkpoint.pt")
    assert set(error.value.differences) == {"temperature", "attention", "old", "new"}
    assert error.value.differences["temperature"] == (0.2, 0.5)
    for name in ("temperature: stored 0.2, now 0.5", "attention: stored 'official', now 'paper'",
                 "old: stored 1, now (not set)", "new: stored (not set), now [1, 2]"):
        assert name in str(error.value)
    renamed = error.value.renamed(lambda key: "--" + key)
    assert "--temperature: stored 0.2" in str(renamed) and renamed.differences == error.value.differences
    compare_settings(stored, dict(stored), tmp_path / "checkpoint.pt")  # the same: no error


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state(1.0), path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="could not write the checkpoint") as error:
        save_checkpoint(state(2.0), path)
    assert str(path) in str(error.value) and "No space left" in str(error.value)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"], torch.full((64,), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
