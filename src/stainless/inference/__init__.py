"""Running a trained network on whole images: by overlapping tiles (``tiling``), with test-time augmentation or
Monte-Carlo dropout for an uncertainty map (``uncertainty``), and as a nuclei detector (``nuclei``)."""
