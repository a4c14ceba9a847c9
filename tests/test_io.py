import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from stainless.io import ImageReadError, normalize, read_image, to_dtype, write_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip_keeps_values(tmp_path, dtype):
    rng = np.random.default_rng(0)
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (rng.random((2, 20, 24)) * hi).astype(dtype)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image)
    out = read_image(path)
    assert out.shape == (2, 20, 24) and out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_16bit_values_are_not_squeezed_through_8_bits(tmp_path):
    image = np.arange(0, 4000, dtype=np.uint16).reshape(40, 100)  # 4000 distinct values
    tifffile.imwrite(tmp_path / "a.tif", image)
    out = normalize(read_image(tmp_path / "a.tif"), mode="range", vmin=0, vmax=3999)
    assert len(np.unique(out)) == 4000


def test_channel_last_and_channel_first_agree(tmp_path):
    rng = np.random.default_rng(1)
    chw = rng.integers(0, 60000, (3, 16, 18)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "first.tif", chw)
    tifffile.imwrite(tmp_path / "last.tif", np.moveaxis(chw, 0, -1), photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "first.tif"), read_image(tmp_path / "last.tif"))
    # no metadata: a plain numpy file saved as PNG (channel-last RGB)
    iio.imwrite(tmp_path / "rgb.png", np.moveaxis((chw // 256).astype(np.uint8), 0, -1))
    assert read_image(tmp_path / "rgb.png").shape == (3, 16, 18)


def test_multipage_channels_selected_by_index(tmp_path):
    pages = np.stack([np.full((8, 8), v, np.uint16) for v in (10, 20, 30, 40)])
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    out = read_image(tmp_path / "stack.tif", channels=[2, 0])
    assert out[:, 0, 0].tolist() == [30, 10]
    with pytest.raises(ImageReadError, match=r"stack\.tif.*channel index 4 out of range"):
        read_image(tmp_path / "stack.tif", channels=[4])


def test_percentile_normalisation_is_per_channel():
    rng = np.random.default_rng(2)
    image = np.stack([rng.normal(100, 10, (32, 32)), rng.normal(5000, 300, (32, 32))]).astype(np.float32)
    out = normalize(image, low=1, high=99)
    for c in range(2):
        assert np.isclose(np.percentile(out[c], 50), 0.5, atol=0.1)
        assert out[c].min() == 0 and out[c].max() == 1


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(ImageReadError, match=r"empty\.tif: file is empty"):
        read_image(tmp_path / "empty.tif")
    with pytest.raises(ImageReadError, match=r"junk\.tif: cannot decode"):
        read_image(tmp_path / "junk.tif")
    with pytest.raises(ImageReadError, match=r"a\.bmp: unsupported format"):
        read_image(tmp_path / "a.bmp")


def test_write_tiff_and_to_dtype(tmp_path):
    image01 = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    write_tiff(tmp_path / "p.tif", to_dtype(image01, np.uint16))
    back = tifffile.imread(tmp_path / "p.tif")
    assert back.dtype == np.uint16 and back.max() == 65535 and back.min() == 0
