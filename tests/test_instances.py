"""Instance heads (``model.instances=boundary|distance``): the maps drawn from the annotations, their decoding into
objects, a head that learns to part touching disks, and the option through train, evaluate, video and export."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from torch.utils.data import DataLoader, Dataset

from stainless.data.instances import instance_target
from stainless.metrics.objects import (
    SEED_CHOICES,
    SEED_DEPTHS,
    SEED_THRESHOLDS,
    SPLIT_FRACTIONS,
    decode_instances,
    instances_from_mask,
    mask_diameter,
    match_objects,
    split_distance,
    tune_split,
)
from stainless.models.segmentation_module import SegmentationModule


def _touching_pair(size: int = 48, radius: float = 9.0, gap: float = 16.0, centre=(24.0, 24.0)) -> np.ndarray:
    """Two disks whose centres are ``gap`` apart (< 2 radii: they touch), labelled 1 and 2, split down the middle."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = centre
    left, right = (cy, cx - gap / 2), (cy, cx + gap / 2)
    labels = np.zeros((size, size), np.int64)
    labels[np.hypot(yy - left[0], xx - left[1]) < radius] = 1
    in_right = np.hypot(yy - right[0], xx - right[1]) < radius
    labels[in_right & ((labels == 0) | (xx >= cx))] = 2
    return labels


def test_boundary_target_marks_each_rim_and_the_contact_line():
    labels = _touching_pair()
    target = instance_target(labels, "boundary")
    contact = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    rows, cols = np.nonzero(contact)
    assert len(rows) >= 5
    assert target[rows, cols].all() and target[rows, cols + 1].all()  # both sides of the contact
    assert target[24, 16] == 0 and target[24, 32] == 0  # the disks' centres
    assert target[labels == 0].max() == 0  # nothing outside the objects


def test_distance_target_is_one_hill_per_object():
    labels = _touching_pair()
    target = instance_target(labels, "distance")
    for obj in (1, 2):
        inside = target[labels == obj]
        assert inside.max() == pytest.approx(1.0) and inside.min() > 0
    # the peak of each object is near its own centre, the contact line is low
    assert target[24, 16] > 0.8 and target[24, 32] > 0.8
    assert target[24, 23:25].max() < 0.3
    assert target[labels == 0].max() == 0


@pytest.mark.parametrize("mode", ["boundary", "distance"])
def test_decoding_perfect_maps_gives_the_drawn_objects(mode):
    labels = _touching_pair()
    maps = np.stack([(labels > 0).astype(np.float32), instance_target(labels, mode)])
    decoded = decode_instances(maps, mode, min_size=5, min_distance=3)
    matched = match_objects(labels, decoded)
    assert matched["n_pred"] == 2 and all(iou > 0.9 for _, _, iou in matched["pairs"])


@pytest.mark.parametrize("mode", ["boundary", "distance"])
def test_the_head_decides_where_the_mask_alone_over_splits(mode):
    # One long rod: a distance watershed of the mask with a small min_distance cuts it into pieces;
    # the instance map says it is one object, and the decoder follows the map.
    labels = np.zeros((24, 90), np.int64)
    labels[8:16, 5:85] = 1
    labels[11:13, 5:85] = 1
    mask = labels > 0
    assert instances_from_mask(mask, min_size=5, min_distance=3).max() > 1
    maps = np.stack([mask.astype(np.float32), instance_target(labels, mode)])
    assert decode_instances(maps, mode, min_size=5, min_distance=3).max() == 1
    # and with the map of two objects drawn on the same mask, two come out
    two = labels.copy()
    two[:, 45:] *= 2
    maps = np.stack([mask.astype(np.float32), instance_target(two, mode)])
    assert decode_instances(maps, mode, min_size=5, min_distance=3).max() == 2


def test_decoding_without_a_head_is_the_mask_watershed():
    labels = _touching_pair()
    probability = (labels > 0).astype(np.float32)[None]
    expected = instances_from_mask(labels > 0, 5, 3)
    assert (decode_instances(probability, "none", 0.5, 5, 3) == expected).all()


def _cones(labels: np.ndarray, neck: float) -> np.ndarray:
    """A distance map of two touching objects: a cone on each centre, 1 there, that falls to ``neck`` half way."""
    centres = [np.argwhere(labels == i).mean(0) for i in (1, 2)]
    half = 0.5 * np.hypot(*(centres[1] - centres[0]))
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    hills = [1 - (1 - neck) * np.hypot(yy - cy, xx - cx) / half for cy, cx in centres]
    return np.where(labels > 0, np.clip(np.maximum(*hills), 0, 1), 0).astype(np.float32)


def test_tuning_picks_the_seed_threshold_that_parts_the_annotated_objects():
    labels = _touching_pair()
    mask = (labels > 0).astype(np.float32)
    low, high = np.stack([mask, _cones(labels, neck=0.55)]), np.stack([mask, _cones(labels, neck=0.65)])
    # the hills meet at 0.55: seeds above 0.5 and below merge the pair into one object, 0.6 and above part it
    assert decode_instances(low, "distance", 0.5, 5, seed_threshold=0.5).max() == 1
    assert decode_instances(low, "distance", 0.5, 5, seed_threshold=0.6).max() == 2
    candidates = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    tuned = tune_split([(low, labels)], "distance", 0.5, 5, candidates, default=0.5)
    assert tuned["key"] == "seed_threshold"
    assert tuned["value"] == 0.6  # the winner nearest the default among 0.6, 0.7 and 0.8
    assert tuned["f1"] == 1.0 and tuned["default_f1"] == pytest.approx(2 / 3)  # merged: 1 of 2 found
    assert tuned["scores"][0.8] == 1.0 and tuned["scores"][0.2] == pytest.approx(2 / 3)
    # over two fields the counts are pooled: only 0.7 and above part the pair of the second field too
    tuned = tune_split([(high, labels), (low, labels)], "distance", 0.5, 5, candidates, default=0.5)
    assert tuned["value"] == 0.7 and tuned["f1"] == 1.0
    assert tuned["scores"][0.6] == pytest.approx(2 * 3 / (2 * 3 + 1))  # 3 of the 4 objects found


def test_hmaxima_seeds_part_cells_whose_map_stays_high_at_the_contact():
    labels = _touching_pair()
    mask = (labels > 0).astype(np.float32)
    high = np.stack([mask, _cones(labels, neck=0.75)])  # peaks 1, saddle 0.75: a level of 0.5 sees one core
    assert decode_instances(high, "distance", 0.5, 5, seed_threshold=0.5).max() == 1
    two = decode_instances(high, "distance", 0.5, 5, seed_threshold=0.2, seeds="hmaxima")
    assert match_objects(labels, two, (0.5,))["by_threshold"][0.5]["tp"] == 2  # each peak stands 0.25 above the saddle
    assert decode_instances(high, "distance", 0.5, 5, seed_threshold=0.3, seeds="hmaxima").max() == 1  # not 0.3
    # relative to the peak, not a level: the same pair with its map scaled to peak at 0.4 still parts at depth 0.08
    low_peaks = high * [[[1]], [[0.4]]]
    assert decode_instances(low_peaks, "distance", 0.5, 5, seed_threshold=0.08, seeds="hmaxima").max() == 2
    # a boundary map: troughs 0 inside each cell, 0.3 along their contact
    rims = np.stack([mask, 1 - _cones(labels, neck=0.7)])
    troughs = decode_instances(rims, "boundary", 0.5, 5, seed_threshold=0.2, seeds="hmaxima", unseeded="drop")
    assert match_objects(labels, troughs, (0.5,))["by_threshold"][0.5]["f1"] == 1.0  # seeded in the troughs
    assert decode_instances(rims, "boundary", 0.5, 5, seed_threshold=0.5).max() == 1
    with pytest.raises(ValueError, match=r"segmentation.seeds='peaks': use threshold, hmaxima or shape"):
        decode_instances(high, "distance", 0.5, 5, seeds="peaks")
    # tuning searches depths with this rule: 0.2 parts the pair, 0.3 and deeper do not
    tuned = tune_split([(high, labels)], "distance", 0.5, 5, SEED_DEPTHS, default=0.2, seeds="hmaxima")
    assert tuned["value"] == 0.2 and tuned["f1"] == 1.0 and tuned["scores"][0.3] == pytest.approx(2 / 3)


def test_hmaxima_seeds_an_isolated_cell_whose_map_peaks_low():
    # a lone cell whose map stays between 0.25 and 0.4: 0.15 deep inside the cell, but outside the mask the map
    # counts as background (0), so its peak stands 0.4 above that and is seeded at a depth of 0.2
    yy, xx = np.mgrid[:40, :40]
    labels = (np.hypot(yy - 20, xx - 20) < 9).astype(np.int32)
    low = np.where(labels > 0, 0.25 + 0.15 * instance_target(labels, "distance"), 0).astype(np.float32)
    maps = np.stack([(labels > 0).astype(np.float32), low])
    found = decode_instances(maps, "distance", 0.5, 5, seed_threshold=0.2, seeds="hmaxima", unseeded="drop")
    assert match_objects(labels, found, (0.5,))["by_threshold"][0.5]["f1"] == 1.0


@pytest.mark.parametrize("mode", ["boundary", "distance"])
def test_seeds_grow_over_the_learned_map_up_to_its_contact_line(mode):
    # a rod of two objects touching at columns 37 | 38; the boundary map climbs slowly from the left core (0 up to
    # column 17) and steeply from the right one (0 from column 45): the cores (map below 0.5) end 11 and 4 columns
    # from the contact, so only flooding over the map (not the distance between seeds) puts the cut on the contact
    labels = np.zeros((16, 64), np.int32)
    labels[3:13, 2:38], labels[3:13, 38:62] = 1, 2
    cols = np.arange(64, dtype=np.float32)
    rim = np.where(cols <= 37, np.clip((cols - 17) / 20, 0, 1), np.clip((45 - cols) / 7, 0, 1))
    rim = np.broadcast_to(rim, labels.shape)
    learned = rim if mode == "boundary" else 1 - rim  # the distance map: low at the contact, high in the cores
    maps = np.stack([(labels > 0).astype(np.float32), np.where(labels > 0, learned, 0).astype(np.float32)])
    found = decode_instances(maps, mode, 0.5, 5, seed_threshold=0.5)
    assert found.max() == 2
    np.testing.assert_array_equal(found, labels)  # every pixel on its own side of the contact


def test_a_seed_smaller_than_the_smallest_object_is_dropped_not_given_to_another():
    # two separate cells: the left with a core, the right whose map passes the level in 3 pixels only (a speck)
    labels = np.zeros((20, 50), np.int32)
    labels[4:16, 4:18], labels[4:16, 30:44] = 1, 2
    maps = np.stack([(labels > 0).astype(np.float32), np.where(labels == 1, 0.9, 0.2).astype(np.float32)])
    maps[1, 9, 35:38] = 0.9
    kept = decode_instances(maps, "distance", 0.5, 20, seed_threshold=0.5)
    np.testing.assert_array_equal(kept, labels)  # the speck's cell is a part without a seed: its own label
    dropped = decode_instances(maps, "distance", 0.5, 20, seed_threshold=0.5, unseeded="drop")
    np.testing.assert_array_equal(dropped, labels == 1)


def test_shape_seeds_find_each_part_of_the_mask_even_close_or_at_the_border():
    # three parts: two whose peaks are closer than min_distance, one cut by the image's edge; each has its own peak
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 5:15], labels[5:15, 18:28], labels[20:30, 30:40] = 1, 2, 3  # peaks 13-14 px apart
    maps = np.stack([(labels > 0).astype(np.float32), (labels > 0).astype(np.float32)])
    found = decode_instances(maps, "distance", 0.5, 5, min_distance=16, seeds="shape", unseeded="drop")
    assert match_objects(labels, found, (0.5,))["by_threshold"][0.5]["f1"] == 1.0


def test_shape_seeds_weight_the_outline_by_the_learned_map():
    # one disk annotated as two halves: the outline alone shows one object, the learned map two cores
    yy, xx = np.mgrid[:48, :48]
    disk = np.hypot(yy - 24, xx - 24) < 10
    labels = (disk * np.where(xx < 24, 1, 2)).astype(np.int32)
    mask = disk.astype(np.float32)
    split = np.stack([mask, _cones(labels, neck=0.3)])  # each half's map peaks at its centre, 0.3 on the diameter
    two = decode_instances(split, "distance", 0.5, 5, min_distance=3, seeds="shape")
    assert match_objects(labels, two, (0.5,))["by_threshold"][0.5]["f1"] == 1.0
    rims = np.stack([mask, 1 - split[1]])  # the same contact as a boundary map
    assert match_objects(labels, decode_instances(rims, "boundary", 0.5, 5, min_distance=3, seeds="shape"),
                         (0.5,))["by_threshold"][0.5]["f1"] == 1.0
    # a map that shows no contact leaves the outline's one peak; seeds closer than min_distance merge
    flat = np.stack([mask, np.where(disk, 1.0, 0.0)])
    assert decode_instances(flat, "distance", 0.5, 5, min_distance=3, seeds="shape").max() == 1
    assert decode_instances(split, "distance", 0.5, 5, min_distance=12, seeds="shape").max() == 1
    # the split setting of this rule is min_distance (pixels), tuned as without a head
    tuned = tune_split([(split, labels)], "distance", 0.5, 5, (3, 12), default=12, seeds="shape")
    assert tuned["key"] == "min_distance" and tuned["value"] == 3 and tuned["default_f1"] < tuned["f1"] == 1.0
    with pytest.raises(ValueError, match=r"segmentation.seeds='peaks': use threshold, hmaxima or shape"):
        decode_instances(split, "distance", 0.5, 5, seeds="peaks")


def test_foreground_without_a_cell_core_is_kept_or_dropped():
    labels = _touching_pair()
    maps = np.stack([(labels > 0).astype(np.float32), _cones(labels, neck=0.3)])
    maps[0, -8:, -8:] = 1.0  # texture: foreground whose distance map stays at 0.15, below any seed level or depth
    maps[1, -8:, -8:] = 0.15
    for seeds, level in (("threshold", 0.5), ("hmaxima", 0.2)):
        kept = decode_instances(maps, "distance", 0.5, 5, seed_threshold=level, seeds=seeds)
        dropped = decode_instances(maps, "distance", 0.5, 5, seed_threshold=level, seeds=seeds, unseeded="drop")
        assert kept.max() == 3 and (kept[-8:, -8:] == 3).all(), seeds
        assert dropped.max() == 2 and not dropped[-8:, -8:].any(), seeds
        assert match_objects(labels, dropped, (0.5,))["by_threshold"][0.5]["f1"] == 1.0
    tuned = tune_split([(maps, labels)], "distance", 0.5, 5, SEED_THRESHOLDS, 0.5, unseeded="drop")
    assert tuned["f1"] == 1.0 and tuned["default_f1"] == 1.0  # tuning decodes with the rule too: no false object
    with pytest.raises(ValueError, match=r"segmentation.unseeded='remove': use keep or drop"):
        decode_instances(maps, "distance", 0.5, 5, unseeded="remove")
    with pytest.raises(ValueError, match=r"segmentation.unseeded='auto': use keep or drop"):
        decode_instances(maps, "distance", 0.5, 5, unseeded="auto")  # a rule is chosen by tuning, not decoding


def test_auto_chooses_whether_foreground_without_a_core_counts_on_annotated_fields():
    labels = _touching_pair()
    maps = np.stack([(labels > 0).astype(np.float32), _cones(labels, neck=0.3)])
    maps[0, -8:, -8:] = 1.0  # a patch whose distance map stays at 0.15: no seed reaches it
    maps[1, -8:, -8:] = 0.15
    texture = tune_split([(maps, labels)], "distance", 0.5, 5, SEED_THRESHOLDS, 0.5, unseeded="auto")
    assert texture["unseeded"] == "drop" and texture["f1"] == 1.0  # not annotated: texture, dropped
    assert texture["unseeded_f1"] == {"keep": pytest.approx(0.8), "drop": 1.0}
    annotated = labels.copy()
    annotated[-8:, -8:] = 3  # the same patch drawn as a cell: a cell whose map peaks low, kept
    cell = tune_split([(maps, annotated)], "distance", 0.5, 5, SEED_THRESHOLDS, 0.5, unseeded="auto")
    assert cell["unseeded"] == "keep" and cell["f1"] == 1.0 and cell["unseeded_f1"]["drop"] == pytest.approx(0.8)
    # a tie keeps; each rule's best level is found for it
    tie = tune_split([(maps[:, :-10], labels[:-10])], "distance", 0.5, 5, SEED_THRESHOLDS, 0.5, unseeded="auto")
    assert tie["unseeded"] == "keep" and tie["unseeded_f1"] == {"keep": 1.0, "drop": 1.0}
    assert tune_split([(maps, labels)], "none", 0.5, 5, (3, 5), 5, unseeded="auto")["unseeded"] == "keep"
    # seeds dropped as specks leave no gap in the numbering: labels are 1..n
    specks = maps.copy()
    specks[1, 16, 12] = 0.9  # the first foreground pixel in raster order, far below its cell's core: seed 1, a speck
    split = decode_instances(specks, "distance", 0.5, 5, seed_threshold=0.5)
    assert set(np.unique(split)) == set(range(split.max() + 1))


def test_tuning_without_a_head_picks_the_split_distance():
    labels = _touching_pair(gap=14.0)  # centres 14 px apart: a split distance of 14 or more keeps them together
    maps = (labels > 0).astype(np.float32)[None]
    tuned = tune_split([(maps, labels)], "none", 0.5, 5, (4, 8, 20, 30), default=20)
    assert tuned["key"] == "min_distance" and tuned["value"] == 8 and tuned["f1"] == 1.0
    assert tuned["default_f1"] < 1.0 and tuned["scores"][4] == 1.0


def _dumbbell(size: int, radius: float, gap: float, halves: bool) -> np.ndarray:
    """Two overlapping disks ``gap`` apart, annotated as two halves or as one object."""
    yy, xx = np.mgrid[:size, :size]
    union = (np.hypot(yy - size / 2, xx - (size - gap) / 2) < radius) | (np.hypot(yy - size / 2, xx - (size + gap) / 2) < radius)
    labels = union.astype(np.int32)
    if halves:
        labels[union & (xx >= size / 2)] = 2
    return labels


def test_the_mask_watershed_cuts_touching_cells_at_their_neck():
    # a large and a small disk overlapping: the cut must follow the waist between them (the circles cross at column
    # 34.7), flooding down from each centre
    yy, xx = np.mgrid[:40, :64]
    big, small = np.hypot(yy - 20, xx - 22) < 14, np.hypot(yy - 20, xx - 40) < 8
    labels = np.where(big & (xx <= 34), 1, 0) + np.where(small & ~(big & (xx <= 34)), 2, 0)
    found = instances_from_mask(big | small, min_size=20, min_distance=5)
    matched = match_objects(labels, found, (0.5,))
    assert matched["n_pred"] == 2 and all(iou > 0.9 for _, _, iou in matched["pairs"]), matched["pairs"]


def test_a_split_distance_at_each_images_own_scale_is_tuned_when_fields_differ_in_magnification():
    # a small field whose waisted pair is two cells (centres 12 px apart) and a field at three times the scale whose
    # shallow pair is one (centres 24 px apart): no one distance splits the first and keeps the second, half of each
    # image's own diameter does (11 px there, 30 px here)
    small, large = _dumbbell(48, 8, 12, True), _dumbbell(128, 24, 24, False)
    assert mask_diameter(small > 0) == pytest.approx(21.4, abs=0.1) and mask_diameter(large > 0) > 2.8 * 21.4
    assert mask_diameter(small > 0, min_size=10_000) is None
    fields = [((labels > 0).astype(np.float32)[None], labels) for labels in (small, large)]
    fixed = tune_split(fields, "none", 0.5, 5, (4, 8, 20, 30), default=20)
    assert fixed["fraction"] is None and fixed["f1"] < 1.0
    scaled = tune_split(fields, "none", 0.5, 5, (4, 8, 20, 30), default=20, image_fractions=SPLIT_FRACTIONS)
    assert scaled["fraction"] == 0.5 and scaled["f1"] == 1.0 and scaled["scores"]["0.5 x diameter"] == 1.0
    assert scaled["scores"][8] == fixed["scores"][8]  # the fixed candidates are scored as before
    for (maps, truth), spacing in zip(fields, (11, 30)):
        assert split_distance(maps[0] > 0.5, 5, 20, 0.5) == spacing
        decoded = decode_instances(maps, "none", 0.5, 5, min_distance=20, split_fraction=0.5)
        assert match_objects(truth, decoded, (0.5,))["by_threshold"][0.5]["f1"] == 1.0
    assert split_distance(np.zeros((8, 8), bool), 5, 7, 0.5) == 7  # no object to measure: the given distance
    # a tie goes to the one distance: a per-image scale must earn its place
    tie = tune_split(fields[:1], "none", 0.5, 5, (4, 8, 20, 30), default=20, image_fractions=SPLIT_FRACTIONS)
    assert tie["fraction"] is None and tie["value"] == 8 and tie["scores"]["0.3 x diameter"] == tie["f1"] == 1.0
    # seeds=shape is split by the same distance; a level (seeds=threshold) has no distance to scale
    shaped = np.stack([fields[0][0][0], np.ones_like(fields[0][0][0])])
    assert decode_instances(shaped, "distance", 0.5, 5, min_distance=20, seeds="shape", split_fraction=0.5).max() == 2
    assert decode_instances(shaped, "distance", 0.5, 5, min_distance=20, seeds="shape").max() == 1
    # with the unseeded rule tuned too (segmentation.unseeded=auto), each rule is tuned over the per-image scales
    shape_fields = [(np.stack([maps[0], np.ones_like(maps[0])]), truth) for maps, truth in fields]
    auto = tune_split(shape_fields, "distance", 0.5, 5, (4, 8, 20, 30), default=20, seeds="shape", unseeded="auto",
                      image_fractions=SPLIT_FRACTIONS)
    assert auto["key"] == "min_distance" and auto["fraction"] == 0.5 and auto["f1"] == 1.0
    level = tune_split(fields, "distance", 0.5, 5, SEED_THRESHOLDS, 0.5, image_fractions=SPLIT_FRACTIONS)
    assert level["fraction"] is None and not any("diameter" in str(k) for k in level["scores"])


class _TouchingPairs(Dataset):
    """Noisy images of two touching disks at random places, with their instance labels."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            labels = _touching_pair(48, rng.uniform(7, 9), rng.uniform(12, 14), tuple(rng.uniform(18, 30, 2)))
            image = (labels > 0) * 0.6 + 0.2 + 0.1 * rng.standard_normal(labels.shape)
            self.items.append({"source": torch.from_numpy(image.astype(np.float32))[None],
                               "target": torch.from_numpy((labels > 0).astype(np.int64)),
                               "labels": torch.from_numpy(labels)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.slow  # trains: left out of `make mutate`, run by `make test`
@pytest.mark.parametrize("mode", ["boundary", "distance"])
def test_an_instance_head_learns_to_part_touching_disks(mode):
    torch.manual_seed(0)
    module = SegmentationModule(
        arch="unet", backbone={"name": "resnet18", "encoder_name": "resnet18", "encoder_weights": None,
                               "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        in_channels=1, classes=1, loss={"bce_weight": 1.0, "jaccard_weight": 1.0}, instances=mode,
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3})
    module.size_multiple = 8
    held_out = _TouchingPairs(4, seed=1)
    source = torch.stack([item["source"] for item in held_out.items])
    truths = [item["labels"].numpy() for item in held_out.items]
    targets = np.stack([instance_target(t, mode) for t in truths])

    def error():
        module.eval()
        with torch.no_grad():
            maps = module.maps(source).numpy()
        return float(np.abs(maps[:, 1] - targets).mean()), maps

    before, _ = error()
    module.train()  # Lightning keeps the modes it is given
    # 160 steps: at 80, one seed parted 8 of 8 disks on 2 threads and 4 on 1 (float sums in another order)
    trainer = L.Trainer(max_steps=160, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(_TouchingPairs(16, seed=0), batch_size=4, shuffle=True,
                                   generator=torch.Generator().manual_seed(0)))
    after, maps = error()
    assert after < 0.6 * before, (before, after)
    found = [match_objects(truth, decode_instances(m, mode, min_size=20, min_distance=3)) for truth, m in
             zip(truths, maps)]
    assert sum(f["by_threshold"][0.5]["tp"] for f in found) >= 6, [f["n_pred"] for f in found]  # of 8 disks


def decoded_with(monkeypatch) -> tuple[list[float], list[tuple], list[str], list[tuple]]:
    """The seed thresholds the evaluation decodes its images with, the (seed rule, threshold, unseeded rule, split
    fraction) of each video frame, the unseeded rule and the (seed rule, min_distance, split fraction) of each image,
    recorded call by call."""
    from stainless.evaluation import segmentation
    from stainless.video import pipeline

    used, frames, rules, spacing, decode = [], [], [], [], segmentation.decode_instances

    def spy(maps, mode, threshold, min_size, min_distance, seed_threshold, seeds, unseeded, split_fraction):
        used.append(seed_threshold)
        rules.append(unseeded)
        spacing.append((seeds, min_distance, split_fraction))
        return decode(maps, mode, threshold, min_size, min_distance, seed_threshold, seeds, unseeded, split_fraction)

    def frame_spy(maps, mode, threshold, min_size, min_distance, seed_threshold, seeds, unseeded, split_fraction):
        frames.append((seeds, seed_threshold, unseeded, split_fraction))
        return decode(maps, mode, threshold, min_size, min_distance, seed_threshold, seeds, unseeded, split_fraction)

    monkeypatch.setattr(segmentation, "decode_instances", spy)
    monkeypatch.setattr(pipeline, "decode_instances", frame_spy)
    return used, frames, rules, spacing


@pytest.mark.slow  # trains: left out of `make mutate`, run by `make test`
def test_instance_option_through_train_evaluate_video_and_export(cfg_train, cfg_eval, tmp_path, monkeypatch):
    from stainless.evaluate import evaluate
    from stainless.export import export
    from stainless.train import train
    from tests.conftest import run_config_factory

    cfg = cfg_train(
        "experiment=rbc_segmentation", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=6",
        "data.synthetic.size=64", "+data.synthetic.video_frames=4", "+data.synthetic.video_cells=2",
        "+data.synthetic.cells_per_frame=3", "data.patch_size=64", "data.batch_size=2", "model.instances=boundary",
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["instances"] == "boundary"
    used, frames, rules, spacing = decoded_with(monkeypatch)
    summary = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.seeds=threshold"))
    out = Path(summary["output_dir"])
    assert summary["instances"] == "boundary"
    assert list((out / "predictions").glob("*_boundary.tif"))
    # the seed threshold was tuned on the validation and training fields, and every test image is decoded with it
    split = summary["object_sizes"]["split"]
    assert split["key"] == "seed_threshold" and split["source"].startswith("tuned on 1 validation field(s) and ")
    assert " and 4 training field(s) with " in split["source"]  # the 6 annotated fields but the validation and test ones
    assert summary["object_sizes"]["seed_threshold"] == split["value"] in SEED_THRESHOLDS
    assert used and set(used) == {split["value"]}
    # unseeded=auto (the default): the rule with the better F1 there, each rule with its own best level, decodes
    rule_f1 = split["unseeded_f1"]
    assert split["f1"] == max(rule_f1.values()) and rule_f1[split["unseeded"]] == split["f1"]
    assert split["unseeded"] == ("drop" if rule_f1["drop"] > rule_f1["keep"] else "keep")
    assert summary["object_sizes"]["unseeded"] == split["unseeded"] and set(rules) == {split["unseeded"]}
    assert f"foreground no seed reaches: {split['unseeded']}, chosen there (object F1 " in split["source"]
    # what the tuning picks is what decodes: here it is made to pick 0.3 (not the default 0.5) and to drop
    # (this tiny model's validation split keeps)
    used.clear()
    rules.clear()
    from stainless.evaluation import segmentation

    tune = segmentation.tune_split
    forced = lambda *a, **k: {**tune(*a, **k), "value": 0.3, "unseeded": "drop"}  # noqa: E731
    monkeypatch.setattr(segmentation, "tune_split", forced)
    summary = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.seeds=threshold", run="tuned_0.3"))
    assert summary["object_sizes"]["seed_threshold"] == 0.3 and set(used) == {0.3}
    assert summary["object_sizes"]["unseeded"] == "drop" and set(rules) == {"drop"}
    monkeypatch.setattr(segmentation, "tune_split", tune)
    used.clear()
    summary = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.seed_threshold=0.35",
                                "segmentation.seeds=threshold", "segmentation.tune_on=val", run="given"))
    # a level given: the rule is still chosen, at that level; tune_on=val: on the validation split alone
    assert summary["object_sizes"]["split"]["source"].startswith("segmentation.seed_threshold=0.35; foreground no")
    assert ", chosen on 1 validation field(s) with " in summary["object_sizes"]["split"]["source"]
    assert summary["object_sizes"]["split"]["scores"].keys() == {"0.35"} and used and set(used) == {0.35}
    rules.clear()
    kept = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.tune=false", "baselines=false",
                             run="untuned"))
    said = (Path(kept["output_dir"]) / "report.md").read_text().split("## How touching cells were split\n\n")[1]
    assert said.startswith("seed_threshold 0.5 (seeds: threshold; foreground no seed reaches: keep) (default (tuning "
                           "off)).\n")  # no baselines: none said to be split
    assert kept["object_sizes"]["unseeded"] == "keep" and set(rules) == {"keep"}  # auto without tuning: keep
    assert kept["object_sizes"]["seeds"] == "threshold" and "seeds_f1" not in kept["object_sizes"]["split"]
    # seeds=auto (the default): threshold and shape each tuned on validation, the better object F1 decodes
    for favoured in SEED_CHOICES:
        spacing.clear()

        def biased(*args, favoured=favoured, **kwargs):  # the favoured rule's F1 raised on validation
            tuned = tune(*args, **kwargs)
            return {**tuned, "f1": tuned["f1"] + (0.5 if args[6] == favoured else 0.0)}

        monkeypatch.setattr(segmentation, "tune_split", biased)
        chosen = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", run=f"auto_{favoured}"))["object_sizes"]
        assert chosen["seeds"] == favoured and chosen["split"]["seeds_f1"].keys() == set(SEED_CHOICES)
        assert chosen["split"]["key"] == ("min_distance" if favoured == "shape" else "seed_threshold")
        assert spacing and {rule for rule, *_ in spacing} == {favoured}
        assert f"seeds: {favoured}, chosen on the same fields (object F1 " in chosen["split"]["source"]
    monkeypatch.setattr(segmentation, "tune_split", tune)
    # seeds=shape: the split setting is min_distance, tuned over the diameters' fractions as without a head
    spacing.clear()
    shaped = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.seeds=shape", run="shape"))
    sizes = shaped["object_sizes"]
    assert sizes["split"]["key"] == "min_distance" and sizes["split"]["source"].startswith("tuned on 1 validation")
    # in pixels at the training annotations' diameter, and as fractions of each image's own
    fractions = {str(max(2, round(f * sizes["diameter"]))) for f in SPLIT_FRACTIONS}
    assert sizes["split"]["scores"].keys() == fractions | {f"{f:g} x diameter" for f in SPLIT_FRACTIONS}
    assert str(sizes["min_distance"]) in fractions
    assert spacing and set(spacing) == {("shape", sizes["min_distance"], sizes["split_fraction"])}
    # what the tuning picks is the spacing that decodes: here it is made to pick 3 pixels, then half of each
    # image's diameter (the model's images and the baselines' masks are split at their own scale)
    baseline_spacing = []
    monkeypatch.setattr(segmentation, "split_distance", lambda *a: baseline_spacing.append(a) or split_distance(*a))
    for value, fraction in ((3, None), (20, 0.5)):
        spacing.clear()
        baseline_spacing.clear()
        monkeypatch.setattr(segmentation, "tune_split",
                            lambda *a, v=value, f=fraction, **k: {**tune(*a, **k), "value": v, "fraction": f})
        shaped = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.seeds=shape",
                                   "baselines=true", run=f"shape_{value}_{fraction}"))
        expected = 3 if fraction is None else max(2, round(0.5 * sizes["diameter"]))
        assert shaped["object_sizes"]["min_distance"] == expected and shaped["object_sizes"]["split_fraction"] == fraction
        assert set(spacing) == {("shape", expected, fraction)}
        assert baseline_spacing and {a[2:] for a in baseline_spacing} == {(expected, fraction)}
    assert sizes["min_distance"] != 3 and shaped["object_sizes"]["seed_threshold"] == 0.5  # unused by this rule
    assert "0.5 x each image's own object diameter" in shaped["object_sizes"]["split"]["source"]
    # the report says how cells were split: the setting at each image's scale, the seed rules and where they came from
    report = (Path(shaped["output_dir"]) / "report.md").read_text()
    said = report.split("## How touching cells were split\n\n", 1)[1].split("\n")[0]
    assert said.startswith(f"min_distance 0.5 x each image's own object diameter ({expected} px at the training one) "
                           "(seeds: shape; foreground no seed reaches: ")
    assert "(tuned on 1 validation field(s) and 4 training field(s)" in said
    assert said.endswith(". The baselines' masks are split the same way.")
    monkeypatch.setattr(segmentation, "tune_split", tune)
    monkeypatch.setattr(segmentation, "split_distance", split_distance)
    with pytest.raises(ValueError, match=r"segmentation.tune_on='test': use train\+val or val"):
        evaluate(cfg_eval(f"ckpt_path={ckpt}", "segmentation.tune_on=test", run="bad_tune_on"))
    with pytest.raises(ValueError, match=r"segmentation.seed_threshold=1.5: must be auto or a number between 0 and 1"):
        evaluate(cfg_eval(f"ckpt_path={ckpt}", "segmentation.seed_threshold=1.5", run="bad_seed"))
    with pytest.raises(ValueError, match=r"segmentation.seeds='peaks': use auto, threshold, hmaxima or shape"):
        evaluate(cfg_eval(f"ckpt_path={ckpt}", "segmentation.seeds=peaks", run="bad_seeds"))
    with pytest.raises(ValueError, match=r"segmentation.unseeded='remove': use auto, keep or drop"):
        evaluate(cfg_eval(f"ckpt_path={ckpt}", "segmentation.unseeded=remove", run="bad_unseeded"))
    # test-time augmentation (the default): the maps written are the average over the 8 flips/rotations
    single_view = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown", "segmentation.tta=1", run="single_view"))
    assert summary["object_sizes"]["tta"] == 8 and single_view["object_sizes"]["tta"] == 1
    name = sorted((out / "predictions").glob("*_probability.tif"))[0].name
    single, averaged = (tifffile.imread(Path(s["output_dir"]) / "predictions" / name) for s in (single_view, summary))
    assert single.shape == averaged.shape and np.abs(single - averaged).max() > 1e-4
    for given, read in (("0", "0"), ("9", "9"), ("2.5", "2.5"), ("true", "True")):
        with pytest.raises(ValueError, match=rf"segmentation.tta={read}: must be a whole number"):
            evaluate(cfg_eval(f"ckpt_path={ckpt}", f"segmentation.tta={given}", run=f"bad_tta_{given}"))
    videos = Path(cfg.paths.data_dir) / "synthetic_rbc" / "videos"
    monkeypatch.setattr(segmentation, "tune_split", forced)  # the video's rule is given (drop): its level is forced
    vsum = evaluate(cfg_eval(f"ckpt_path={ckpt}", f"videos={{A:{videos / 'UREA.tif'}}}", "frame_interval=2.0",
                             "segmentation.overlay_video=false", "segmentation.seeds=hmaxima",
                             "segmentation.unseeded=drop", run="video"))
    assert vsum["object_sizes"]["tta"] == 1  # frames are segmented once each: the split is tuned on single views
    assert (Path(vsum["output_dir"]) / "cells.csv").is_file()
    # the video is split with the tuned setting too, and with the seed rule asked for (a depth from SEED_DEPTHS)
    assert vsum["object_sizes"]["seed_threshold"] == 0.3 and vsum["object_sizes"]["seeds"] == "hmaxima"
    assert vsum["object_sizes"]["split"]["scores"].keys() == {str(d) for d in SEED_DEPTHS}
    assert vsum["object_sizes"]["unseeded"] == "drop" and kept["object_sizes"]["unseeded"] == "keep"
    assert len(frames) == 4 and set(frames) == {("hmaxima", 0.3, "drop", None)}
    # a split distance at each image's own scale splits each frame at its own
    frames.clear()
    monkeypatch.setattr(segmentation, "tune_split", lambda *a, **k: {**tune(*a, **k), "fraction": 0.5})
    scaled = evaluate(cfg_eval(f"ckpt_path={ckpt}", f"videos={{A:{videos / 'UREA.tif'}}}", "segmentation.seeds=shape",
                               "segmentation.overlay_video=false", run="video_scaled"))
    assert scaled["object_sizes"]["split_fraction"] == 0.5 and len(frames) == 4
    assert {(rule, fraction) for rule, _, _, fraction in frames} == {("shape", 0.5)}
    monkeypatch.setattr(segmentation, "tune_split", tune)
    package = tmp_path / "boundary.zip"
    cfg_export = run_config_factory("export", tmp_path, "export")
    result = export(cfg_export(f"ckpt_path={ckpt}", "format=bioimageio", f"output={package}"))
    assert result["test_model"]["status"] == "passed"
    with zipfile.ZipFile(package) as archive:
        output = np.load(archive.open("test_output.npy"))
        rdf = archive.read("rdf.yaml").decode()
    assert output.shape[1] == 2 and 0 < output[0, 1].max() <= 1  # foreground and boundary maps, not binarised
    assert "instance head's boundary map" in rdf
    sidecar = tmp_path / "boundary.onnx"
    export(cfg_export(f"ckpt_path={ckpt}", "format=onnx", f"output={sidecar}", run="onnx"))
    assert "boundary map" in json.loads(Path(str(sidecar) + ".json").read_text())["output"]
