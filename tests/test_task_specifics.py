"""What is specific to each classic pretext task: permutation sets, patch geometry, colour bins, masks."""

import numpy as np
import pytest
import torch

from bench.augment.ops import color_jitter, grid_tiles, random_resized_crop
from bench.models.encoders import build_encoder
from bench.tasks import TASKS
from bench.tasks.colorization import GRID, ab_bins, decode, rgb_to_lab, soft_encode
from bench.tasks.inpainting import masked_l2, square_masks
from bench.tasks.jigsaw import permutation_set
from bench.tasks.relative_location import NEIGHBOURS, RelativeLocation


def test_jigsaw_permutation_set_has_the_stated_minimum_hamming_distance():
    perms = permutation_set(100, seed=0)
    assert perms.shape == (100, 9) and len({tuple(p) for p in perms}) == 100
    assert all(sorted(p) == list(range(9)) for p in perms)
    dist = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(dist, 9)
    assert dist.min() >= 6  # the docstring's figure for 100 permutations
    assert np.array_equal(perms, permutation_set(100, seed=0))  # fixed seed: the same set everywhere


def coordinate_images(b: int, size: int) -> torch.Tensor:
    """Channel 0 holds the row index, channel 1 the column index of every pixel."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([rows, cols, torch.zeros_like(rows)]).float()[None].repeat(b, 1, 1, 1)


@pytest.mark.parametrize("size", [32, 96])
def test_grid_tiles_are_cut_where_their_corners_say_with_gaps(size):
    x = coordinate_images(4, size)
    tiles, corners = grid_tiles(x, torch.Generator().manual_seed(0))
    t = tiles.shape[-1]
    assert t == int((size // 3) * 0.85)
    assert torch.equal(tiles[:, :, 0, 0, 0], corners[..., 0].float()) and torch.equal(
        tiles[:, :, 1, 0, 0], corners[..., 1].float()
    )
    right_gap = corners[:, 1, 1] - (corners[:, 0, 1] + t)  # tile 1 is right of tile 0: never overlapping
    assert (right_gap >= 0).all()


def test_relative_location_labels_match_the_patch_geometry():
    task = RelativeLocation(build_encoder("small_cnn", 0), TASKS["relative_location"].Config(), 32)
    images = (coordinate_images(64, 32) * 7).clamp(0, 255).to(torch.uint8)  # the row/column survive to_unit
    _, _, labels, corners = task.pairs(images, torch.Generator().manual_seed(1))
    d = (corners[:, 1] - corners[:, 0]).float()  # (row, col) offset of the neighbour from the centre, pixels
    expect = torch.tensor([divmod(NEIGHBOURS[int(k)], 3) for k in labels]) - 1  # grid direction, each in {-1, 0, 1}
    assert torch.equal(torch.round(d / 10).long(), expect)  # 10 px cells; jitter moves a patch by at most 2 px
    assert (d[expect == 0].abs() <= 2).all() and (d[expect != 0].abs() >= 8).all()
    assert len(set(labels.tolist())) == 8


def test_colour_bins_round_trip():
    bins = ab_bins()
    assert 200 < len(bins) < 320  # in-gamut 10x10 cells of ab (the paper has 313 with its own gamut estimate)
    rgb = torch.rand(1, 3, 50, 1, generator=torch.Generator().manual_seed(0))
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T
    back = decode(soft_encode(ab, bins), bins)
    assert (back - ab).abs().max() < GRID  # the soft-encoded mean stays within one bin width
    hard = bins[soft_encode(ab, bins).argmax(1)]
    assert ((hard - ab).abs() <= GRID / 2 + 1e-4).all()  # the heaviest bin is the one containing the colour


def test_lab_of_known_colours():
    white_black_red = torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 0, 0]]).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(white_black_red)[0, :, :, 0].T
    assert lab[0].tolist() == pytest.approx([100, 0, 0], abs=0.5)
    assert lab[1].tolist() == pytest.approx([0, 0, 0], abs=0.5)
    assert lab[2].tolist() == pytest.approx([53.2, 80.1, 67.2], abs=0.5)


def test_colorization_refuses_grayscale_data():
    gray = torch.randint(0, 255, (10, 1, 8, 8), dtype=torch.uint8).expand(-1, 3, -1, -1)
    with pytest.raises(ValueError, match="grayscale"):
        TASKS["colorization"].check_data(gray)
    TASKS["colorization"].check_data(torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8))


def test_inpainting_loss_ignores_unmasked_pixels():
    gen = torch.Generator().manual_seed(0)
    mask = square_masks(4, 32, 16, gen, "cpu")
    assert mask.shape == (4, 1, 32, 32) and (mask.sum((1, 2, 3)) == 256).all()
    pred, target = torch.randn(4, 3, 32, 32, generator=gen), torch.randn(4, 3, 32, 32, generator=gen)
    changed = target + (1 - mask) * 100.0  # differs only outside the hole
    assert masked_l2(pred, target, mask) == pytest.approx(masked_l2(pred, changed, mask).item())
    assert masked_l2(pred, target + mask, mask) != pytest.approx(masked_l2(pred, target, mask).item())


def test_view_primitives_are_identities_at_their_neutral_settings():
    x = torch.rand(4, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    same = random_resized_crop(x, gen, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    assert torch.equal(color_jitter(x, gen, p=0.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1), x)
    assert torch.allclose(color_jitter(x, gen, p=1.0, brightness=0, contrast=0, saturation=0, hue=1e-9), x, atol=1e-4)
