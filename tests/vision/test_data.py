import pytest
import torch

from mp_contrastive.vision.data import load_cifar, stratified_subset


def test_packed_cifar10_from_shared_data(data_root):
    generator = torch.Generator().manual_seed(0)
    test = load_cifar("cifar10", data_root, train=False)
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    subset = load_cifar("cifar10", data_root, train=True,
                        select=lambda labels: stratified_subset(labels, 100, generator))
    assert subset.images.shape == (100, 3, 32, 32)
    assert torch.equal(torch.bincount(subset.labels, minlength=10), torch.full((10,), 10))


def test_packed_images_match_lossless_originals(data_root):
    """The JPEG copy is lossy (PSNR about 30 dB, data README): decoded images must be within that
    of the exact originals, with identical labels, in the original order."""
    import numpy as np

    lossless = np.load(data_root / "cifar10" / "train_first4000_lossless.npz")
    first = load_cifar("cifar10", data_root, train=True,
                       select=lambda labels: torch.arange(200))
    original = torch.from_numpy(lossless["x"][:200]).permute(0, 3, 1, 2).float()
    assert first.labels.tolist()[:10] == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.equal(first.labels, torch.from_numpy(lossless["labels"][:200]))
    mse = (first.images.float() - original).pow(2).mean()
    psnr = 10 * torch.log10(255.0**2 / mse)
    assert psnr > 27, psnr


def test_missing_root_and_missing_data_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root .* does not exist.*--download"):
        load_cifar("cifar10", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="cifar100 \\(train\\) not found.*--download"):
        load_cifar("cifar100", tmp_path)
    with pytest.raises(ValueError, match="'name' must be one of"):
        load_cifar("mnist", tmp_path)


def test_default_root_is_the_environment_then_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MP_CONTRASTIVE_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=f"data root '{tmp_path / 'data'}' does not exist"):
        load_cifar("cifar10")
    monkeypatch.delenv("MP_CONTRASTIVE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=f"data root '{tmp_path / 'cache'}/mp_contrastive'"):
        load_cifar("cifar10")


def test_stratified_subset():
    labels = torch.arange(10).repeat_interleave(50)
    index = stratified_subset(labels, 35, torch.Generator().manual_seed(0))
    assert index.unique().numel() == 35
    counts = torch.bincount(labels[index], minlength=10)
    assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="'size'"):
        stratified_subset(labels, 0, torch.Generator())


def test_an_offline_download_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error

    from mp_contrastive.vision import data as data_module

    def offline(name, root, train, download):
        if not download:  # torchvision's answer when the files are not there
            raise RuntimeError("Dataset not found or corrupted.")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_module, "_load_torchvision", offline)
    with pytest.raises(FileNotFoundError, match="could not be downloaded .*offline"):
        data_module.load_cifar("cifar10", tmp_path, download=True)
