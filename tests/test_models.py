"""The saccade model's parts: KL, crops, gradients, objective, NaN guard."""

import functools
import itertools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal
from torch.utils.data import DataLoader

from varsac.errors import ConfigError
from varsac.models import localized_spatial_transformer as lst
from varsac.models.classifier import NonFiniteLossError
from varsac.models.crop_classifier import INFERENCE_CHUNK, CropClassifier
from varsac.models.full_image import FullImageClassifier
from varsac.models.map_pointer import CellDraw, MapPointer, cell_centres, cell_contrast
from varsac.models.proxy_encoder import ProxyEncoder
from varsac.models.saccader import Saccader
from varsac.models.saccades import SaccadeNetwork
from varsac.models.schedules import warmup_cosine
from varsac.models.spatial_transformer import (
    SpatialTransformer,
    crop_boxes,
    crops_from_latents,
    jitter_crops,
    mirror_crops,
    mirror_images,
    random_flips,
)
from varsac.models.vrnn import VRNN
from varsac.pyramid import PyramidTIFF, write_pyramid
from varsac.tasks import Classification, SetClassification

SCALES = (0.1, 0.3)  # the crops' (min, max) scale where a cell draw needs them


def tiny_saccader(**kwargs) -> Saccader:
    torch.manual_seed(0)
    return Saccader(
        proxy_encoder=ProxyEncoder(1, 16, channels=(8, 16), feature_dim=32),
        vrnn=VRNN(
            32,
            1,
            16,
            steps=3,
            hidden_dim=32,
            fixed_variance=kwargs.pop("fixed", None),
            closed_loop=kwargs.pop("closed_loop", False),
            reconstruction_size=kwargs.pop("reconstruction_size", None),
            prior=kwargs.pop("prior", "learnt"),
            where=kwargs.pop("where", "dense"),
            contrast_prior=kwargs.pop("contrast_prior", 0.0),
        ),
        cropper=SpatialTransformer(window=8),
        crop_classifier=CropClassifier(1, 10, channels=(8, 16), hidden=16),
        task=SetClassification(10, 2),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        **kwargs,
    )


def tiny_batch(batch: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    target = torch.zeros(batch, 10)
    target[torch.arange(batch), torch.arange(batch) % 10] = 1
    target[torch.arange(batch), (torch.arange(batch) + 3) % 10] = 1
    return {
        "image": torch.rand(batch, 1, 40, 40),
        "proxy": torch.rand(batch, 1, 16, 16),
        "target": target,
    }


def test_rollout_kl_is_the_gaussian_kl_of_its_prior_and_posterior() -> None:
    vrnn = VRNN(feature_dim=12, proxy_channels=1, proxy_size=8, steps=2, hidden_dim=16).eval()
    features, proxy = torch.randn(5, 12), torch.rand(5, 1, 8, 8)
    rollout = vrnn(features, proxy, sample=False)
    hidden = torch.zeros(5, 16)  # step 0 starts from a zero state
    prior = vrnn.prior(hidden)
    posterior = vrnn.posterior(torch.cat([features, hidden], -1))
    mq, sq, mp, sp = posterior.mean, posterior.stddev, prior.mean, prior.stddev
    closed_form = (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    torch.testing.assert_close(rollout.kl[:, 0], closed_form)
    # and a Monte-Carlo estimate of E_q[log q − log p] agrees
    z = posterior.sample((20000,))
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(monte_carlo, closed_form, rtol=0.05, atol=0.05)
    assert (rollout.kl >= 0).all() and rollout.kl.shape == (5, 2)


def test_the_standard_prior_is_n01_and_has_no_parameters() -> None:
    vrnn = VRNN(12, 1, 8, steps=2, hidden_dim=16, prior="standard").eval()
    assert vrnn.prior is None
    features, proxy = torch.randn(5, 12), torch.rand(5, 1, 8, 8)
    rollout = vrnn(features, proxy, sample=False)
    posterior = vrnn.posterior(torch.cat([features, torch.zeros(5, 16)], -1))
    mean, std = posterior.mean, posterior.stddev
    closed_form = (-torch.log(std) + (std**2 + mean**2) / 2 - 0.5).sum(-1)
    torch.testing.assert_close(rollout.kl[:, 0], closed_form)
    with pytest.raises(ValueError, match="prior"):
        VRNN(12, 1, 8, prior="flat")


def test_the_score_of_sampled_latents_is_their_posterior_log_density() -> None:
    vrnn = VRNN(12, 1, 8, steps=1, hidden_dim=16)
    features, proxy = torch.randn(5, 12), torch.rand(5, 1, 8, 8)
    assert vrnn(features, proxy, sample=False).log_posterior is None  # nothing was drawn
    torch.manual_seed(0)
    rollout = vrnn(features, proxy, sample=True)
    posterior = vrnn.posterior(torch.cat([features, torch.zeros(5, 16)], -1))
    expected = posterior.log_prob(rollout.latents[:, 0]).sum(-1)
    torch.testing.assert_close(rollout.log_posterior[:, 0], expected)
    # the latents are held fixed: the score's gradient reaches the posterior, not the draw
    rollout.log_posterior.sum().backward()
    assert all(p.grad is not None for p in vrnn.posterior.parameters())


def test_fixed_posterior_variance_is_the_configured_one() -> None:
    vrnn = VRNN(8, 1, 8, steps=1, hidden_dim=8, fixed_variance=1.44)
    posterior = vrnn.posterior(torch.randn(3, 16))
    assert isinstance(posterior, Normal)
    torch.testing.assert_close(posterior.stddev, torch.full((3, 3), 1.2))


def test_evaluation_uses_the_posterior_mean_and_training_samples() -> None:
    vrnn = VRNN(8, 1, 8, steps=2, hidden_dim=8).eval()
    features, proxy = torch.randn(3, 8), torch.rand(3, 1, 8, 8)
    a, b = vrnn(features, proxy, sample=False), vrnn(features, proxy, sample=False)
    torch.testing.assert_close(a.latents, b.latents)
    c = vrnn(features, proxy, sample=True)
    assert not torch.allclose(a.latents, c.latents)


def test_a_crop_of_a_known_region_is_that_region() -> None:
    image = torch.arange(64.0).view(1, 1, 8, 8)
    # half the side, centred in the top-left and bottom-right quadrants
    crops = torch.tensor([[[0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]])
    glimpses = SpatialTransformer(window=4)(image, crops)
    assert glimpses.shape == (1, 2, 1, 4, 4)
    torch.testing.assert_close(glimpses[0, 0, 0], image[0, 0, :4, :4])
    torch.testing.assert_close(glimpses[0, 1, 0], image[0, 0, 4:, 4:])
    torch.testing.assert_close(
        crop_boxes(crops)[0], torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])
    )


def test_the_whole_image_at_full_resolution_is_the_image() -> None:
    image = torch.rand(2, 3, 6, 6)
    glimpses = SpatialTransformer(window=6)(image, torch.tensor([[[1.0, 0, 0]]] * 2))
    torch.testing.assert_close(glimpses[:, 0], image)


def test_the_spatial_transformer_given_image_files_says_which_cropper_reads_them(
    tmp_path: Path,
) -> None:
    write_pyramid(np.zeros((64, 64), np.uint8), tmp_path / "a.tif")
    with pytest.raises(ConfigError, match="gives list of image files: choose model/cropper=lst"):
        SpatialTransformer(window=6)([PyramidTIFF(tmp_path / "a.tif")], torch.zeros(1, 1, 3))


def test_crops_stay_inside_the_image_for_any_latent() -> None:
    latents = torch.randn(1000, 3) * 20
    crops = crops_from_latents(latents, 0.1, 0.6)
    assert crops[:, 0].min() >= 0.1 and crops[:, 0].max() <= 0.6
    boxes = crop_boxes(crops)
    assert boxes.min() >= 0 and boxes.max() <= 1


def test_jittered_crops_move_at_most_the_jitter_of_their_half_side_and_stay_inside() -> None:
    torch.manual_seed(0)
    crops = crops_from_latents(torch.randn(2000, 3) * 3, 0.05, 0.5)
    assert jitter_crops(crops, 0.0) is crops
    moved = jitter_crops(crops, 0.5)
    assert torch.equal(moved[:, 0], crops[:, 0])  # the scale is the policy's
    shift = (moved[:, 1:] - crops[:, 1:]).abs()
    assert (shift <= 0.5 * crops[:, :1] + 1e-6).all()
    assert (shift > 0.25 * crops[:, :1]).float().mean() > 0.3  # not all pinned at the edges
    boxes = crop_boxes(moved)
    assert boxes.min() >= 0 and boxes.max() <= 1
    with pytest.raises(ValueError, match="jitter"):
        jitter_crops(crops, -0.1)


def test_glimpse_jitter_moves_the_crops_of_training_and_not_of_evaluation() -> None:
    batch = tiny_batch()
    still, jittered = tiny_saccader(), tiny_saccader(glimpse_jitter=0.5)
    for sample, differ in ((False, False), (True, True)):
        losses = []
        for model in (still, jittered):
            torch.manual_seed(3)
            losses.append(model.objective(batch, sample=sample)[0])
        assert differ != torch.equal(*losses)
    with pytest.raises(ConfigError, match="glimpse_jitter"):
        tiny_saccader(glimpse_jitter=-1.0)


def test_a_glimpse_of_a_mirrored_image_is_its_mirrored_crop_glimpsed_and_mirrored() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 2, 21, 17)
    crops = crops_from_latents(torch.randn(4, 5, 3), 0.1, 0.6)
    flips = torch.tensor([[False, False], [True, False], [False, True], [True, True]])
    axes = [[-1] * bool(fx) + [-2] * bool(fy) for fx, fy in flips]
    mirrored = torch.stack([image.flip(axis) for image, axis in zip(images, axes, strict=True)])
    assert torch.equal(mirror_images(images, flips), mirrored)
    cropper = SpatialTransformer(window=7)
    direct = cropper(mirrored, crops)
    through_the_image = mirror_images(cropper(images, mirror_crops(crops, flips)), flips)
    torch.testing.assert_close(through_the_image, direct)
    assert torch.equal(mirror_crops(mirror_crops(crops, flips), flips), crops)
    assert not torch.equal(direct[1:], cropper(images, crops)[1:])  # a mirror does change them


def test_random_flips_mirror_only_the_axes_asked_for() -> None:
    torch.manual_seed(0)
    assert random_flips(8, "none") is None
    horizontal, both = random_flips(4000, "horizontal"), random_flips(4000, "both")
    assert not horizontal[:, 1].any() and 0.45 < horizontal[:, 0].float().mean() < 0.55
    share = both.float().mean(0)
    assert ((share > 0.45) & (share < 0.55)).all()


def test_flips_mirror_training_rollouts_as_if_the_data_were_mirrored() -> None:
    batch = tiny_batch()
    cells = {"where": "cells", "contrast_prior": 1.0}
    model = tiny_saccader(flips="both", **cells).eval()
    flips = torch.tensor([[True, False], [False, True], [True, True], [False, False]])
    looked = model.saccade(batch["image"], batch["proxy"], sample=False, flips=flips)
    mirrored = model.saccade(
        mirror_images(batch["image"], flips), mirror_images(batch["proxy"], flips), sample=False
    )
    torch.testing.assert_close(looked.log_probs, mirrored.log_probs)
    torch.testing.assert_close(looked.crops, mirror_crops(mirrored.crops, flips))
    torch.testing.assert_close(looked.glimpses, mirrored.glimpses)
    plain = model.saccade(batch["image"], batch["proxy"], sample=False)
    assert not torch.allclose(plain.log_probs, looked.log_probs)
    # evaluation never mirrors: the objective equals the unflipped model's
    torch.testing.assert_close(
        model.objective(batch, False)[0], tiny_saccader(**cells).eval().objective(batch, False)[0]
    )
    with pytest.raises(ValueError, match="flips"):
        tiny_saccader(flips="diagonal")


def test_gradcheck_of_the_spatial_transformer_in_scale_and_centre() -> None:
    torch.manual_seed(0)
    image = torch.rand(2, 1, 9, 9, dtype=torch.float64)
    latents = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def glimpse(z: torch.Tensor) -> torch.Tensor:
        return SpatialTransformer(window=5)(image, crops_from_latents(z, 0.2, 0.8))

    assert torch.autograd.gradcheck(glimpse, (latents,), eps=1e-6, atol=1e-5)
    glimpse(latents).pow(2).sum().backward()
    # every latent coordinate, scale (0) and centre (1, 2), gets a gradient
    assert (latents.grad.abs().sum(dim=(0, 1)) > 0).all()


def test_saccader_trains_and_every_parameter_gets_a_gradient() -> None:
    model = tiny_saccader()
    loss, log_probs, parts = model.objective(tiny_batch(), sample=True)
    assert log_probs.shape == (4, 10) and torch.isfinite(loss)
    assert set(parts) == {"classification_nll", "kl", "reconstruction_nll", "crop_scale"}
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_the_map_pointer_points_at_the_cell_its_attention_picks() -> None:
    """Keys that single out channel 0 and a map hot at row 1, column 3 of 4 × 4: the point
    is that cell's centre, x along the columns (the crops' frame)."""
    pointer = MapPointer(map_channels=2, hidden_dim=8, width=16)
    with torch.no_grad():
        pointer.key.weight.zero_()
        pointer.key.weight[:, 0] = 10.0
        pointer.key.bias.zero_()
        pointer.query.weight.zero_()
        pointer.query.bias.zero_()
        pointer.score.weight.fill_(1.0)
    feature_map = torch.zeros(2, 2, 4, 4)
    feature_map[0, 0, 1, 3] = 1.0
    feature_map[1, 0, 3, 0] = 1.0
    feature_map[:, 1] = torch.rand(2, 4, 4)  # channel 1 is not looked at
    keys = pointer.keys(feature_map)
    weights = pointer.weights(keys, torch.randn(2, 8))
    torch.testing.assert_close(weights.sum((1, 2)), torch.ones(2))
    point = pointer.point(keys, torch.randn(2, 8))
    expected = torch.tensor([[0.75, -0.25], [-0.75, 0.75]])  # (x, y) of the two hot cells
    torch.testing.assert_close(point, expected, atol=1e-3, rtol=0)


def test_a_vrnn_with_where_map_centres_its_saccades_where_locate_points() -> None:
    vrnn = VRNN(12, 1, 8, steps=3, hidden_dim=16, where="map").eval()
    centre = torch.tensor([[0.5, -0.25], [-0.9, 0.1]])
    rollout = vrnn(torch.randn(2, 12), None, sample=False, locate=lambda hidden: centre)
    torch.testing.assert_close(rollout.latents[..., 1:3].tanh(), centre[:, None].expand(2, 3, 2))
    with pytest.raises(ValueError, match="where=map needs locate"):
        vrnn(torch.randn(2, 12), None, sample=False)
    dense = VRNN(12, 1, 8, steps=3, hidden_dim=16)
    with pytest.raises(ValueError, match="locate is for where=map or cells"):
        dense(torch.randn(2, 12), None, sample=False, locate=lambda hidden: centre)
    with pytest.raises(ValueError, match="where must be one of"):
        VRNN(12, 1, 8, where="everywhere")


def hot_pointer(hidden_dim: int = 8, hot_channel: int = 0) -> MapPointer:
    """A pointer whose attention logit at a cell is 10 tanh(v) / tanh(1), v the map's channel
    ``hot_channel`` there, whatever the state."""
    pointer = MapPointer(map_channels=2, hidden_dim=hidden_dim, width=1)
    with torch.no_grad():
        pointer.key.weight.zero_()
        pointer.key.weight[:, hot_channel] = 1.0
        pointer.key.bias.zero_()
        pointer.query.weight.zero_()
        pointer.query.bias.zero_()
        pointer.score.weight.fill_(10.0 / np.tanh(1.0))
        pointer.score.bias.zero_()
    return pointer


def test_a_cell_draw_takes_a_new_cell_each_step_likeliest_first_in_evaluation() -> None:
    """Three hot cells of a 4 × 4 map, hotter and hotter: evaluation takes them in that
    order and never one twice; training draws among them; the log-probability is the
    attention's over the cells not yet taken."""
    feature_map = torch.zeros(1, 2, 4, 4)
    feature_map[0, 0, 0, 1], feature_map[0, 0, 2, 2], feature_map[0, 0, 3, 0] = 1.0, 0.9, 0.8
    pointer = hot_pointer()
    keys = pointer.keys(feature_map)
    draw = CellDraw(pointer, keys, sample=False, scales=SCALES)
    assert draw.reach == 0.25  # half a cell
    centres = [draw(torch.randn(1, 8))[0][0].tolist() for _ in range(3)]
    assert centres == [[-0.25, -0.75], [0.25, 0.25], [-0.75, 0.75]]  # (x, y) of each cell
    torch.manual_seed(0)
    draw = CellDraw(pointer, keys.expand(500, -1, -1, -1), sample=True, scales=SCALES)
    drawn = [draw(torch.randn(500, 8)) for _ in range(2)]
    cells = torch.stack([centre for centre, _ in drawn], 1)  # (500, 2 steps, 2)
    assert (cells[:, 0] != cells[:, 1]).any(-1).all()  # no cell twice in a rollout
    logits = 10.0 * torch.tensor([1.0, 0.9, 0.8] + [0.0] * 13).tanh() / np.tanh(1.0)
    first = torch.stack(
        [
            (cells[:, 0] == torch.tensor(c)).all(-1).float().mean()
            for c in ([-0.25, -0.75], [0.25, 0.25], [-0.75, 0.75])
        ]
    )
    torch.testing.assert_close(first, logits.softmax(0)[:3], atol=0.07, rtol=0)
    torch.testing.assert_close(drawn[0][1][0], logits.log_softmax(0)[0], atol=1e-4, rtol=0)
    taken = CellDraw(pointer, pointer.keys(torch.zeros(1, 2, 1, 1)), True, SCALES)
    taken(torch.randn(1, 8))
    with pytest.raises(ValueError, match="every one of the map's 1 cells is taken"):
        taken(torch.randn(1, 8))


def test_cell_contrast_ranks_the_cells_by_how_far_they_are_from_the_background() -> None:
    """Grey background: a white 2² block fills cell (0, 1) of the 4² grid, one black pixel
    marks cell (3, 3), a darker grey fills cell (2, 0). The one black pixel counts as much as
    a full cell of it (the largest distance, not the mean) and is that cell's peak; blank
    cells get the floor, 1 % of the mean contrast; a blank image is even."""
    proxy = torch.full((1, 1, 8, 8), 0.5)
    proxy[0, 0, 0:2, 2:4] = 1.0
    proxy[0, 0, 7, 6] = 0.0
    proxy[0, 0, 4:6, 0:2] = 0.25
    logits, peaks = cell_contrast(proxy, 4)
    contrast = torch.zeros(4, 4)
    contrast[0, 1], contrast[3, 3], contrast[2, 0] = 0.5, 0.5, 0.25
    expected = (contrast + 0.01 * contrast.mean()).log()
    torch.testing.assert_close(logits[0].view(4, 4), expected)
    pixel = 2 / 8  # a pixel's side in the normalised frame
    torch.testing.assert_close(peaks[0, 15], torch.tensor([-1 + 6.5 * pixel, -1 + 7.5 * pixel]))
    torch.testing.assert_close(peaks[0, 0], torch.tensor([-1 + 0.5 * pixel, -1 + 0.5 * pixel]))
    assert cell_contrast(torch.full((2, 3, 8, 8), 0.3), 4)[0].unique().numel() == 1


def test_a_cell_draw_adds_its_prior_to_the_attention_logits() -> None:
    """An attention even over the cells (all-zero map): evaluation follows the prior alone,
    the log-probability is that of attention plus prior over the cells left, and a cell's
    place is its centre, or the place given for it."""
    pointer = hot_pointer()
    keys = pointer.keys(torch.zeros(2, 2, 4, 4))
    prior = torch.zeros(2, 16)
    prior[:, 5], prior[:, 10], prior[1, 15] = 4.0, 3.0, 5.0
    draw = CellDraw(pointer, keys, sample=False, scales=SCALES, prior=prior)
    first, log_prob = draw(torch.randn(2, 8))
    second, _ = draw(torch.randn(2, 8))
    assert first.tolist() == [[-0.25, -0.25], [0.75, 0.75]]  # cells 5 and 15
    assert second.tolist() == [[0.25, 0.25], [-0.25, -0.25]]  # then cells 10 and 5
    torch.testing.assert_close(log_prob, prior.log_softmax(-1)[[0, 1], [5, 15]])
    places = torch.rand(2, 16, 2) * 2 - 1  # each cell's own place, not its centre
    peaked = CellDraw(pointer, keys, False, SCALES, prior, places)
    assert torch.equal(peaked(torch.randn(2, 8))[0], places[[0, 1], [5, 15]])


def test_inhibition_of_return_skips_the_cells_whose_places_a_crop_has_covered() -> None:
    """A thing on the border of cells 5 and 6 is the peak of both, and the prior ranks them
    first and second, cell 15 third. Without inhibition the second glimpse takes cell 6,
    the same thing again; with it, the crop on cell 5 covers cell 6's place, so the second
    glimpse goes to cell 15. On a 1 × 2 map where the first crop covers both places, the
    second step still gets the other cell rather than none."""
    pointer = hot_pointer()
    keys = pointer.keys(torch.zeros(1, 2, 4, 4))
    prior = torch.zeros(1, 16)
    prior[0, 5], prior[0, 6], prior[0, 15] = 6.0, 5.0, 4.0
    places = cell_centres(keys).clone()[None]
    places[0, 5] = places[0, 6] = torch.tensor([0.0, -0.25])  # the border of cells 5 and 6
    latent = torch.zeros(1, 3)  # the crop at the place, of scale 0.2 in SCALES
    for inhibit, second in ((False, 6), (True, 15)):
        draw = CellDraw(pointer, keys, False, SCALES, prior, places, inhibit=inhibit)
        place, _ = draw(torch.randn(1, 8))
        crop = crops_from_latents(draw.inside(latent, place), *SCALES)
        assert crop[0, 0] < 0.25  # the crop does not reach the centre of cell 15, nor 1, 2, 9
        place, log_prob = draw(torch.randn(1, 8))
        assert torch.equal(place[0], places[0, second])
        blocked = [5, 6] if inhibit else [5]
        expected = prior.clone()
        expected[0, blocked] = float("-inf")
        torch.testing.assert_close(log_prob, expected.log_softmax(-1)[:, second])
    pair = CellDraw(pointer, pointer.keys(torch.zeros(1, 2, 1, 2)), False, (0.9, 0.9), inhibit=True)
    first, _ = pair(torch.randn(1, 8))
    pair.inside(latent, first)
    assert pair.seen.all()  # the crop covers both places
    assert not torch.equal(pair(torch.randn(1, 8))[0], first)
    with pytest.raises(ValueError, match="inhibition_of_return needs where=cells"):
        VRNN(32, 1, 16, inhibition_of_return=True)


def test_a_saccade_network_with_a_contrast_prior_first_looks_where_the_proxy_shows_something() -> (
    None
):
    """An untrained model, κ = 20: on a black proxy with one bright blob, the first saccade of
    the posterior mean is centred within a proxy pixel of the blob's peak pixel, or as near
    as the image's border allows, wherever the blob is."""
    torch.manual_seed(0)
    network = SaccadeNetwork(
        ProxyEncoder(1, 16, channels=(8, 16), feature_dim=32),
        VRNN(32, 1, 16, steps=2, hidden_dim=32, where="cells", contrast_prior=20.0),
        SpatialTransformer(window=8),
        CropClassifier(1, 10, channels=(8, 16), hidden=16),
        Classification(10),
    ).eval()
    proxy = torch.zeros(2, 1, 16, 16)
    proxy[0, 0, 1:3, 13:15] = 1.0  # cell (row 0, column 3) of the 4² map
    proxy[1, 0, 9:11, 5:7] = 1.0  # cell (row 2, column 1)
    with torch.no_grad():
        looked = network.saccade(torch.rand(2, 1, 32, 32), proxy, sample=False)
    place = looked.crops[:, 0, 1:3]  # (x, y) in (−1, 1): the first crop's centre
    peaks = torch.tensor([[13.5, 1.5], [5.5, 9.5]]) / 8 - 1  # the first pixel of each blob
    room = 1 - looked.crops[:, 0, :1]  # how far from the middle the crop's centre can be
    assert ((place - peaks.clamp(-room, room)).abs() <= 1 / 8).all()  # a proxy pixel
    with pytest.raises(ValueError, match="positive with where=cells"):
        VRNN(32, 1, 16, contrast_prior=1.0)


def test_a_cell_draw_centres_the_crop_on_the_place_and_the_offset_the_latent_makes() -> None:
    """The crop's centre is the place plus the reach (half a cell, or as given) · tanh(z₁,
    z₂), the (1 − scale) margin of crops_from_latents undone, as the image allows: a place at
    the border gets a crop against the border, not one that leaves the image."""
    pointer = hot_pointer()
    keys = pointer.keys(torch.zeros(3, 2, 4, 4))
    latent = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    place = torch.tensor([[0.5, -0.5], [-0.3, 0.2], [0.99, 0.0]])
    for draw, reach in ((CellDraw(pointer, keys, False, SCALES), 0.25),
                        (CellDraw(pointer, keys, False, SCALES, reach=0.05), 0.05)):  # fmt: skip
        crop = crops_from_latents(draw.inside(latent, place), *SCALES)  # (3, 3): scale, x, y
        torch.testing.assert_close(crop[:, 0], crops_from_latents(latent, *SCALES)[:, 0])
        torch.testing.assert_close(crop[:2, 1:], place[:2] + reach * latent[:2, 1:].tanh())
        edge = torch.tensor([1 - crop[2, 0], 0.0])
        torch.testing.assert_close(crop[2, 1:], edge, atol=1e-5, rtol=0)


def test_a_vrnn_with_where_cells_places_each_crop_inside_the_cell_drawn() -> None:
    vrnn = VRNN(12, 1, 8, steps=3, hidden_dim=16, where="cells")
    pointer = hot_pointer(hidden_dim=16)
    keys = pointer.keys(torch.rand(2, 2, 4, 4))
    draw = CellDraw(pointer, keys, True, SCALES)
    rollout = vrnn(torch.randn(2, 12), torch.rand(2, 1, 8, 8), True, locate=draw)
    place = crops_from_latents(rollout.latents, *SCALES)[..., 1:3]  # (2, 3, 2) crop centres
    cells = ((place + 1) * 2).floor()  # the column and row of the cell each centre is in
    assert (place.abs() < 1).all() and len({tuple(c) for c in cells[0].tolist()}) == 3
    assert rollout.cell_log_prob.shape == (2, 3) and (rollout.cell_log_prob < 0).all()
    # the policy gradient's score counts the draw of the cell as well as the Gaussian's
    assert (rollout.log_posterior < 0).all()
    with pytest.raises(ValueError, match="where=cells needs locate"):
        vrnn(torch.randn(2, 12), None, sample=False)


@pytest.mark.parametrize(
    ("where", "closed_loop", "policy_gradient"),
    [
        ("map", False, 1),
        ("map", True, 1),
        ("cells", False, 0),
        ("cells", True, 0),
        ("cells", True, 1),
        ("cells+contrast", True, 0),
    ],
)
def test_a_saccader_pointing_on_the_map_trains_every_parameter(
    where: str, closed_loop: bool, policy_gradient: float
) -> None:
    """With ``cells`` the attention learns even without the score function, through the
    glimpse features' a/⊥a, and still with a contrast prior added to its logits."""
    where, _, contrast = where.partition("+")
    model = tiny_saccader(
        where=where,
        closed_loop=closed_loop,
        train_samples=2,
        policy_gradient=policy_gradient,
        contrast_prior=1.0 if contrast else 0.0,
    )
    loss, _, _ = model.objective(tiny_batch(), sample=True)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing
    assert model.map_pointer is not None and tiny_saccader().map_pointer is None


def test_the_policy_loss_weighs_each_look_s_score_by_its_nll_above_the_others() -> None:
    nll = torch.tensor([[1.0, 2.0, 6.0], [3.0, 3.0, 3.0]])
    score = torch.randn(2, 3, requires_grad=True)
    Saccader.policy_loss(nll, score).backward()
    # leave-one-out baselines: [4, 3.5, 1.5] and [3, 3, 3]
    expected = torch.tensor([[-3.0, -1.5, 4.5], [0.0, 0.0, 0.0]]) / 6
    torch.testing.assert_close(score.grad, expected)
    one_look = torch.tensor([[1.0], [3.0]])
    torch.testing.assert_close(Saccader.policy_loss(one_look, torch.ones(2, 1)), torch.tensor(0.0))


def test_several_training_looks_each_classify_and_the_policy_gradient_moves_the_posterior() -> None:
    batch = tiny_batch()
    gradients = {}
    for weight in (0.0, 1.0):
        model = tiny_saccader(train_samples=3, policy_gradient=weight)
        torch.manual_seed(5)
        loss, log_probs, parts = model.objective(batch, sample=True)
        assert log_probs.shape == (4, 10) and torch.isfinite(loss)
        loss.backward()
        gradients[weight] = torch.cat([p.grad.flatten() for p in model.vrnn.posterior.parameters()])
    torch.manual_seed(5)
    looks = model.saccade(batch["image"], batch["proxy"], sample=True, elbo=True, looks=3)
    targets = batch["target"].repeat_interleave(3, 0)
    torch.testing.assert_close(
        parts["classification_nll"], model.task.nll(looks.log_probs, targets).mean()
    )
    assert not torch.allclose(gradients[0.0], gradients[1.0])
    with pytest.raises(ConfigError, match="train_samples"):
        tiny_saccader(train_samples=0)


def test_sum_and_product_objectives() -> None:
    batch = tiny_batch()
    additive = tiny_saccader(objective="sum", beta=0.5)
    loss, _, parts = additive.objective(batch, sample=False)
    elbo = parts["reconstruction_nll"] + parts["kl"]
    torch.testing.assert_close(loss, parts["classification_nll"] + 0.5 * elbo)
    product = tiny_saccader(objective="product", beta=0.5)
    loss, _, parts = product.objective(batch, sample=False)
    elbo = parts["reconstruction_nll"] + parts["kl"]
    torch.testing.assert_close(loss, parts["classification_nll"] * 0.5 * elbo)
    with pytest.raises(ValueError, match="objective"):
        tiny_saccader(objective="mean")


def test_mean_reconstruction_is_nats_per_proxy_value() -> None:
    batch = tiny_batch()
    values = batch["proxy"][0].numel()
    model = tiny_saccader(reconstruction="mean", beta=0.5)
    loss, _, parts = model.objective(batch, sample=False)
    elbo = parts["reconstruction_nll"] / values + parts["kl"]
    torch.testing.assert_close(loss, parts["classification_nll"] + 0.5 * elbo)
    with pytest.raises(ValueError, match="reconstruction"):
        tiny_saccader(reconstruction="max")


def test_a_smaller_reconstruction_is_of_the_area_downsampled_proxy() -> None:
    batch = tiny_batch()  # 16² proxies
    model = tiny_saccader(reconstruction_size=4, reconstruction="mean", beta=0.5)
    features = model.proxy_encoder(batch["proxy"])
    torch.manual_seed(2)
    rollout = model.vrnn(features, batch["proxy"], sample=False)
    # the same rollout, given the proxy downsampled by hand: the same NLL, per 4² values
    torch.manual_seed(2)
    pooled = F.avg_pool2d(batch["proxy"], 4)
    by_hand = model.vrnn(features, pooled, sample=False)
    torch.testing.assert_close(rollout.reconstruction_nll, by_hand.reconstruction_nll)
    loss, _, parts = model.objective(batch, sample=False)
    elbo = parts["reconstruction_nll"] / 16 + parts["kl"]  # 1 channel × 4²
    torch.testing.assert_close(loss, parts["classification_nll"] + 0.5 * elbo)
    with pytest.raises(ValueError, match="reconstruction_size must be at most proxy_size=16"):
        tiny_saccader(reconstruction_size=32)


def test_evaluation_averages_k_posterior_samples() -> None:
    batch = tiny_batch()
    model = tiny_saccader(eval_samples=8).eval()
    torch.manual_seed(3)
    _, log_probs, parts = model.objective(batch, sample=False)
    torch.manual_seed(3)
    looks = model.saccade(batch["image"], batch["proxy"], sample=True, elbo=True, looks=8)
    mean_probs = looks.log_probs.exp().view(4, 8, 10).mean(1)  # row b·K + k: image b, look k
    torch.testing.assert_close(log_probs.exp(), mean_probs)
    # the ELBO terms are the means over the 8 looks of each image, as over 8 separate passes
    torch.testing.assert_close(parts["kl"], looks.rollout.kl.sum(1).mean())
    assert looks.log_probs.view(4, 8, 10).std(1).max() > 0  # 8 samples, not 8 copies


@pytest.mark.parametrize("closed_loop", [False, True])
def test_k_looks_in_one_batch_are_those_of_each_image_alone(closed_loop: bool) -> None:
    """The posterior mean K times in one batch: K copies of each image's own look, in order,
    each cut from its own image (the cropper gets image b with the K·T crops of image b)."""
    model = tiny_saccader(closed_loop=closed_loop).eval()
    batch = tiny_batch(3)
    with torch.no_grad():
        alone = model.saccade(batch["image"], batch["proxy"], sample=False)
        together = model.saccade(batch["image"], batch["proxy"], sample=False, looks=4)
    assert together.glimpses.shape == (12, 3, 1, 8, 8)
    for name in ("log_probs", "crops", "glimpses"):
        torch.testing.assert_close(
            getattr(together, name), getattr(alone, name).repeat_interleave(4, 0)
        )


def test_each_image_s_scale_bounds_bound_its_own_crops() -> None:
    model = tiny_saccader(train_samples=2).eval()
    batch = tiny_batch(3)
    bounds = torch.tensor([[0.05, 0.06], [0.3, 0.3], [0.2, 0.9]])
    looks = model.saccade(batch["image"], batch["proxy"], True, looks=2, scale_bounds=bounds)
    scales = looks.crops[..., 0].view(3, 2 * 3)  # image b: its 2 looks of 3 steps
    assert ((scales >= bounds[:, :1]) & (scales <= bounds[:, 1:])).all()
    torch.testing.assert_close(scales[1], torch.full((6,), 0.3))
    assert (scales[0] < 0.061).all() and (scales[2] > 0.2).all()
    # the training loss takes them from the batch
    small = torch.tensor([[0.05, 0.06]]).expand(3, 2)
    _, _, parts = model.objective({**batch, "scale_bounds": small}, sample=True)
    assert parts["crop_scale"] <= 0.06  # the model's own bounds are 0.2 to 0.5
    with pytest.raises(ValueError, match="scale_bounds"):
        model.saccade(batch["image"], batch["proxy"], False, scale_bounds=bounds[:2])
    with pytest.raises(ValueError, match="scale_bounds"):
        model.saccade(batch["image"], batch["proxy"], False, scale_bounds=bounds.flip(1))


def test_inference_skips_the_elbo_and_only_the_elbo() -> None:
    """Without ``elbo`` no KL or reconstruction is computed (the proxy decoder never runs);
    the latents, glimpses and classes are those of the full rollout."""
    model = tiny_saccader().eval()
    batch = tiny_batch()
    decoded = []
    model.vrnn.decoder.register_forward_hook(lambda *_: decoded.append(1))
    with torch.no_grad():
        full = model.saccade(batch["image"], batch["proxy"], sample=False, elbo=True)
        assert len(decoded) == 3  # once per step
        fast = model.saccade(batch["image"], batch["proxy"], sample=False)
    assert len(decoded) == 3
    assert fast.rollout.kl is None and fast.rollout.reconstruction_nll is None
    assert full.rollout.kl.shape == full.rollout.reconstruction_nll.shape == (4, 3)
    torch.testing.assert_close(fast.log_probs, full.log_probs)
    torch.testing.assert_close(fast.crops, full.crops)


@pytest.mark.parametrize("where", ["dense", "map", "cells"])
def test_the_saccade_network_loads_a_saccader_and_looks_the_same(where: str) -> None:
    model = tiny_saccader(closed_loop=True, where=where).eval()
    network = SaccadeNetwork(
        proxy_encoder=ProxyEncoder(1, 16, channels=(8, 16), feature_dim=32),
        vrnn=VRNN(32, 1, 16, steps=3, hidden_dim=32, closed_loop=True, where=where),
        cropper=SpatialTransformer(window=8),
        crop_classifier=CropClassifier(1, 10, channels=(8, 16), hidden=16),
        task=SetClassification(10, 2),
    ).eval()
    network.load_state_dict(model.state_dict())  # strict: the same parts under the same names
    batch = tiny_batch()
    with torch.no_grad():
        expected = model.saccade(batch["image"], batch["proxy"], sample=False)
        looked = network.saccade(batch["image"], batch["proxy"], sample=False)
    torch.testing.assert_close(looked.log_probs, expected.log_probs)
    torch.testing.assert_close(looked.crops, expected.crops)


def test_a_nan_loss_stops_with_the_step_named() -> None:
    model = tiny_saccader()
    batch = tiny_batch()
    batch["proxy"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"train loss is nan at epoch 0, global step 0"):
        model.training_step(batch, 0)


def test_set_classification_predicts_the_top_k_set() -> None:
    task = SetClassification(num_classes=5, set_size=2)
    log_probs = torch.log(torch.tensor([[0.1, 0.4, 0.05, 0.4, 0.05]]))
    assert task.predict(log_probs).tolist() == [[0, 1, 0, 1, 0]]
    target = torch.tensor([[0.0, 1, 0, 1, 0]])
    torch.testing.assert_close(task.nll(log_probs, target), -torch.log(torch.tensor([0.4])))
    metrics = task.metrics()
    metrics.update(task.predict(log_probs), torch.tensor([[1, 1, 0, 0, 0]]))
    values = metrics.compute()
    assert values["accuracy"] == 0 and values["class_recall"] == 0.5


def test_classification_task() -> None:
    task = Classification(num_classes=3)
    log_probs = torch.log(torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]]))
    assert task.predict(log_probs).tolist() == [1, 0]
    torch.testing.assert_close(
        task.nll(log_probs, torch.tensor([1, 2])), -torch.log(torch.tensor([0.7, 0.2]))
    )


def test_full_image_baseline_sees_the_whole_image() -> None:
    model = FullImageClassifier(
        CropClassifier(1, 10, channels=(8, 16), hidden=16),
        SetClassification(10, 2),
        functools.partial(torch.optim.Adam, lr=1e-3),
    )
    loss, log_probs, _ = model.objective(tiny_batch(), sample=False)
    assert log_probs.shape == (4, 10) and torch.isfinite(loss)


@pytest.mark.parametrize("closed_loop", [False, True])
def test_only_the_closed_loop_looks_where_what_it_saw_leads(closed_loop: bool) -> None:
    """The same proxy over different images: the first glimpse is the same either way; the
    later ones move with what the closed loop saw, and stay put in the open loop."""
    model = tiny_saccader(closed_loop=closed_loop).eval()
    batch = tiny_batch(2)
    proxy = batch["proxy"][:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        crops = model.saccade(batch["image"], proxy, sample=False).crops  # (2, T, 3)
    torch.testing.assert_close(crops[0, 0], crops[1, 0])
    moved = (crops[0, 1:] - crops[1, 1:]).abs().max()
    assert moved > 1e-4 if closed_loop else moved == 0


def test_the_closed_loop_learns_from_the_classification_loss() -> None:
    model = tiny_saccader(closed_loop=True)
    _, _, parts = model.objective(tiny_batch(), sample=True)
    parts["classification_nll"].backward()
    feedback = model.glimpse_embedding[0].weight.grad
    assert feedback is not None and feedback.abs().sum() > 0


def test_both_loops_classify_the_glimpses_they_cut() -> None:
    for closed_loop in (False, True):
        model = tiny_saccader(closed_loop=closed_loop).eval()
        batch = tiny_batch()
        with torch.no_grad():
            saccades = model.saccade(batch["image"], batch["proxy"], sample=False)
            again = model.crop_classifier(model.cropper(batch["image"], saccades.crops))
        assert saccades.glimpses.shape == (4, 3, 1, 8, 8)
        torch.testing.assert_close(saccades.log_probs, again.log_softmax(-1))


def test_warmup_cosine_rises_then_falls_to_its_final_fraction() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup=0.1, final=0.05)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.05, abs=0.01)


def test_a_schedule_spans_the_trainer_s_steps() -> None:
    model = tiny_saccader(scheduler=functools.partial(warmup_cosine, warmup=0.5, final=0.1))
    trainer = L.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    batch = tiny_batch()
    samples = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    trainer.fit(model, train_dataloaders=DataLoader(samples * 6, batch_size=4))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4, rel=0.05)
    endless = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs or trainer\.max_steps"):
        endless.fit(model, train_dataloaders=DataLoader(samples, batch_size=4))


def test_the_lst_samples_the_same_glimpses_in_chunks_as_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Glimpses of different sizes and levels, one outside the image: chunked sampling (one
    glimpse a chunk here) gives what one grid_sample over all of them gives."""
    pixels = np.random.default_rng(0).integers(0, 256, (600, 400, 3), dtype=np.uint8)
    image = PyramidTIFF(write_pyramid(pixels, tmp_path / "image.tif"))
    crops = torch.tensor([[[0.2, -0.5, 0.3], [0.5, 0.1, 0.1], [0.05, 0.9, -0.9], [0.1, 3.0, 3.0]]])
    cropper = lst.LocalizedSpatialTransformer(window=16)
    together = cropper([image, image], crops.expand(2, -1, -1))
    monkeypatch.setattr(lst, "CHUNK_VALUES", 1)
    apart = cropper([image, image], crops.expand(2, -1, -1))
    assert together.shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(apart, together)
    assert together[:, 3].abs().max() == 0  # outside the image: zeros
    assert together[:, :3].amax(dim=(2, 3, 4)).min() > 0  # inside: pixels


def test_glimpses_encoded_in_chunks_without_gradients_match_one_batch() -> None:
    torch.manual_seed(0)
    classifier = CropClassifier(1, 10, channels=(8, 16), hidden=16).eval()
    glimpses = torch.rand(3, INFERENCE_CHUNK, 1, 16, 16)  # three chunks' worth
    with_gradients = classifier.encode(glimpses)
    with torch.no_grad():
        chunked = classifier.encode(glimpses)
    assert with_gradients.requires_grad and chunked.shape == with_gradients.shape
    torch.testing.assert_close(chunked, with_gradients.detach())
