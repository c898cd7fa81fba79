import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mp_contrastive.vision.augment import SimCLRAugment, adjust_hue, rgb_to_grayscale

IMAGES = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8,
                       generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("factor", [-0.5, -0.2, 0.0, 0.13, 0.5])
def test_hue_matches_torchvision(factor):
    x = IMAGES[:8].float() / 255
    ours = adjust_hue(x, torch.full((8,), factor))
    torch.testing.assert_close(ours, TF.adjust_hue(x, factor), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = IMAGES[:8].float() / 255
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_identity_and_flip_are_exact():
    g = torch.Generator().manual_seed(1)
    plain = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0)
    x = IMAGES.float() / 255
    torch.testing.assert_close(SimCLRAugment(flip_p=0.0, **plain)(IMAGES, g), x)
    torch.testing.assert_close(SimCLRAugment(flip_p=1.0, **plain)(IMAGES, g), x.flip(-1))


def test_deterministic_per_generator_and_random_per_sample():
    aug = SimCLRAugment()
    a = aug(IMAGES, torch.Generator().manual_seed(3))
    b = aug(IMAGES, torch.Generator().manual_seed(3))
    c = aug(IMAGES, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = aug(IMAGES[:1].expand(16, -1, -1, -1), torch.Generator().manual_seed(5))
    assert len({tuple(img.flatten()[:50].tolist()) for img in same}) == 16  # 16 different views
    assert a.shape == (64, 3, 32, 32) and a.min() >= 0 and a.max() <= 1


def test_grayscale_probability_and_jitter_statistics():
    aug = SimCLRAugment(grayscale_p=0.5, jitter_p=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                        flip_p=0.0)
    out = aug(IMAGES.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    gray = (out[:, 0] == out[:, 1]).all(-1).all(-1) & (out[:, 1] == out[:, 2]).all(-1).all(-1)
    assert 0.4 < gray.float().mean() < 0.6


def test_crop_is_a_resampled_sub_rectangle():
    """On an image whose red channel is its column index, a crop without flip gives increasing
    columns, a flipped crop decreasing ones, and crops smaller than the image change the range."""
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(256, 3, 32, 32).contiguous()
    aug = SimCLRAugment(jitter_p=0.0, grayscale_p=0.0, flip_p=0.5)
    out = aug(ramp, torch.Generator().manual_seed(0))[:, 0, 16, 4:-4]
    increasing = (out.diff(dim=-1) >= -1e-6).all(-1)
    decreasing = (out.diff(dim=-1) <= 1e-6).all(-1)
    assert bool((increasing | decreasing).all())
    assert 0.3 < increasing.float().mean() < 0.7
    span = out.max(-1).values - out.min(-1).values
    assert span.min() < 0.5 < span.max()  # both small and large crops occur


def test_bad_input():
    with pytest.raises(ValueError, match="'images' must have shape \\[B, 3, H, W\\]"):
        SimCLRAugment()(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="'scale'"):
        SimCLRAugment(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="'grayscale_p'"):
        SimCLRAugment(grayscale_p=1.5)


def test_probe_crop_is_a_window_of_the_reflect_padded_image_maybe_flipped():
    from mp_contrastive.vision.augment import random_crop_flip

    x = IMAGES[:32].float() / 255
    out = random_crop_flip(IMAGES[:32], padding=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    padded = TF.pad(x, [4], padding_mode="reflect")
    windows = {(t, left, f) for t in range(9) for left in range(9) for f in (False, True)}
    shifts, flips = set(), 0
    for i in range(32):
        found = [(t, left, f) for t, left, f in windows
                 if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(
                     padded[i, :, t:t + 32, left:left + 32]))]
        assert found, f"image {i} is no crop of its padded image"
        shifts.add(found[0][:2])
        flips += found[0][2]
    assert len(shifts) > 10 and 4 <= flips <= 28  # draws differ per image


def test_probe_crop_without_padding_or_flip_is_the_identity():
    from mp_contrastive.vision.augment import random_crop_flip

    out = random_crop_flip(IMAGES[:8], padding=0, flip_p=0.0)
    torch.testing.assert_close(out, IMAGES[:8].float() / 255)
    with pytest.raises(ValueError, match="'padding'"):
        random_crop_flip(IMAGES[:2], padding=40)
    with pytest.raises(ValueError, match="'images'"):
        random_crop_flip(IMAGES[0])
