"""Cells over time: read a video frame by frame, segment every frame, split and measure cells, track them,
fit their shrinking, and write tables, plots, track files and an overlay video.

Pipeline (:func:`analyse_video`): frames (``read``) -> probability maps in batches (``segment``) -> instances
(watershed, seeded by the instance head when the model has one) -> measurements (``measure``) -> tracks (``track``, laptrack) -> area(t) per cell -> fits (``fit``) ->
per-condition summary, CSVs and plots (``export``).
"""

from stainless.video.export import CELL_COLUMNS, CONDITION_COLUMNS, FIT_COLUMNS, TRACK_COLUMNS, plot_results, write_csv
from stainless.video.fit import fit_shrinking, shrink_model, summarise_conditions
from stainless.video.measure import in_um, measure, video_pixel_size
from stainless.video.pipeline import analyse_video
from stainless.video.read import VIDEO_SUFFIXES, VideoWriter, count_frames, iter_frames, read_frames, write_video
from stainless.video.segment import instance_mode, segment_frames, segmentation_maps
from stainless.video.track import TrackOutputs, track, write_track_tables

__all__ = [
    "CELL_COLUMNS",
    "CONDITION_COLUMNS",
    "FIT_COLUMNS",
    "TRACK_COLUMNS",
    "VIDEO_SUFFIXES",
    "TrackOutputs",
    "VideoWriter",
    "analyse_video",
    "count_frames",
    "fit_shrinking",
    "in_um",
    "instance_mode",
    "iter_frames",
    "measure",
    "plot_results",
    "read_frames",
    "segment_frames",
    "segmentation_maps",
    "shrink_model",
    "summarise_conditions",
    "track",
    "video_pixel_size",
    "write_csv",
    "write_track_tables",
    "write_video",
]
