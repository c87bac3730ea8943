"""MRIS counts and padding; training-view crops and flips."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abmilx.e2e.data import MrisBags
from abmilx.e2e.sampling import mris_counts, sample_indices, sample_pooled
from abmilx.patches.augment import (
    random_flips,
    random_resized_crop_boxes,
    random_resized_crop_params,
    random_shift,
    resized_crops,
    training_view,
)
from abmilx.patches.store import PatchStoreWriter
from abmilx.training.bags import Bag


def test_mris_counts():
    assert mris_counts(12, 4) == (3, 9)
    assert mris_counts(768, 10) == (76, 692)
    assert mris_counts(128, 3) == (42, 86)
    assert mris_counts(12, 0) == (0, 12)


def test_sampling_without_replacement_when_enough():
    picks = sample_indices(20, 9, np.random.default_rng(0))
    assert len(picks) == 9 and len(set(picks.tolist())) == 9 and picks.max() < 20


def test_small_slide_keeps_all_and_pads_with_duplicates():
    picks = sample_indices(5, 12, np.random.default_rng(0))
    assert len(picks) == 12
    assert set(picks.tolist()) == set(range(5))  # every real patch is kept
    assert np.bincount(picks, minlength=5).sum() == 12
    with pytest.raises(ValueError):
        sample_indices(0, 3, np.random.default_rng(0))


def test_pooled_sampling_over_slides_of_a_case():
    slide, index = sample_pooled([3, 0, 4], 7, np.random.default_rng(1))
    pairs = set(zip(slide.tolist(), index.tolist(), strict=True))
    assert pairs == {(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2), (2, 3)}


def test_random_resized_crop_params_in_bounds():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = random_resized_crop_params(32, 40, (0.25, 1.0), generator)
        assert top >= 0 and top + h <= 32 and left >= 0 and left + w <= 40
        assert 0.25 * 32 * 40 * 0.7 <= h * w <= 32 * 40


@pytest.mark.parametrize("chunks", [0, 4])
def test_training_view_size_dtype_and_determinism(chunks):
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    view = training_view(images, 24, 0.25, True, torch.Generator().manual_seed(5), chunks)
    again = training_view(images, 24, 0.25, True, torch.Generator().manual_seed(5), chunks)
    assert view.shape == (10, 3, 24, 24) and view.dtype == torch.uint8
    assert torch.equal(view, again)


def test_flips_hit_exactly_half_in_chunk_mode():
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 3, 2, 2).clone()
    images[:, :, 0, 0] = 255  # marks the top-left corner
    flipped = random_flips(images, torch.Generator().manual_seed(0), chunks=4)
    moved = (flipped[:, 0] != images[:, 0]).flatten(1).any(1)
    assert moved.any()  # some corner moved
    hflipped = (flipped[:, 0, 0, 1] == 255) | (flipped[:, 0, 1, 1] == 255)
    assert int(hflipped.sum()) == 4


def test_mris_bag_takes_low_then_main_and_pads_small_slides(tmp_path):
    path = tmp_path / "two_scales.lmdb"
    with PatchStoreWriter(path, patch_size=8, jpeg_quality=95, scales={"main": 1, "low": 2}) as w:
        for scale, value, count in (("main", 40, 20), ("low", 220, 2)):
            images = [np.full((8, 8, 3), value, np.uint8)] * count
            w.add_images("s", scale, np.zeros((count, 2), int), images)
    bags = [Bag("s", ("s",), 1)]
    dataset = MrisBags(path, bags, 12, 4, {"main": "main", "low": "low"}, seed=0)
    item = dataset[0]
    brightness = item["images"].float().mean(dim=(1, 2, 3))
    assert item["images"].shape == (12, 3, 8, 8)
    assert (brightness[:3] > 200).all() and (brightness[3:] < 60).all()  # 3 low (2 + 1 dup), 9 main
    dataset.set_epoch(1)
    assert dataset[0]["aug_seed"] != item["aug_seed"]  # fresh draws every epoch


def test_batched_crops_are_bilinear_samples_at_the_crop_pixel_centres():
    """Output pixel i of a crop (top, h) samples the image at top + (i + 0.5) h / size - 0.5."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=generator)
    boxes = random_resized_crop_boxes(12, 32, 32, (0.25, 0.6), generator)
    assert (boxes[:, 2:] <= 40).all()  # every crop is enlarged: one sample per output pixel
    views = resized_crops(images, boxes, 40)
    centres = (torch.arange(40) + 0.5) / 40
    for image, view, (top, left, h, w) in zip(images, views, boxes.tolist(), strict=True):
        y = (top + centres * h) / 32 * 2 - 1  # grid_sample's normalised pixel-edge coordinates
        x = (left + centres * w) / 32 * 2 - 1
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None]
        expected = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )[0]
        assert (view.float() - expected.round()).abs().max() <= 1
    identity = torch.tensor([[0, 0, 32, 32]] * 12)
    assert torch.equal(resized_crops(images, identity, 32), images)


@pytest.mark.parametrize("chunks", [0, 3])
def test_crop_parameters_are_per_patch_or_per_chunk(chunks):
    generator = torch.Generator().manual_seed(2)
    boxes = random_resized_crop_boxes(9, 64, 48, (0.25, 1.0), generator)
    assert len({tuple(box) for box in boxes.tolist()}) == 9  # every patch its own crop
    images = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 3, 64, 48).clone()
    images[:, :, :32] += 100  # the upper half is brighter: crops see different brightness
    views = training_view(images, 16, 0.25, False, torch.Generator().manual_seed(3), chunks)
    upper_share = (views[:, 0] >= 100).float().mean(dim=(1, 2))
    if chunks:
        assert len(set(upper_share.tolist())) <= 3
        assert all(len(set(part.tolist())) == 1 for part in upper_share.view(3, 3))
    else:
        assert len(set(upper_share.tolist())) > 3


@pytest.mark.parametrize("chunks", [0, 4])
def test_random_shift_translates_with_zero_fill_per_patch_or_per_chunk(chunks):
    """The official R50 subtyping RandomAffine: whole-pixel shifts up to a fraction of the
    side, zeros where the patch moved away; one shift per chunk in chunk mode."""
    images = torch.randint(1, 256, (8, 3, 16, 16), dtype=torch.uint8)  # no zero pixel
    shifted = random_shift(images, 0.25, torch.Generator().manual_seed(3), chunks)
    found = []
    for image, out in zip(images, shifted, strict=True):
        rows = (out != 0).any(dim=(0, 2)).nonzero()[:, 0]
        cols = (out != 0).any(dim=(0, 1)).nonzero()[:, 0]
        dy = int(rows[0]) if rows[0] > 0 else int(rows[-1]) - 15
        dx = int(cols[0]) if cols[0] > 0 else int(cols[-1]) - 15
        assert abs(dy) <= 4 and abs(dx) <= 4
        moved = torch.roll(image, (dy, dx), dims=(1, 2))
        keep = out != 0
        assert torch.equal(out[keep], moved[keep]) and keep.sum() == 3 * (16 - abs(dy)) * (
            16 - abs(dx)
        )
        found.append((dy, dx))
    if chunks:
        assert [found[0], found[2], found[4], found[6]] == [found[1], found[3], found[5], found[7]]
    assert len(set(found)) > 1
    same = training_view(images, 16, 1.0, False, torch.Generator().manual_seed(3), chunks)
    assert torch.equal(same, images)  # no shift by default (full crop, no flips: identity)
