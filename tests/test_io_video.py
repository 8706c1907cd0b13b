"""hcjax.io.video: MP4/PNG round trips, atomic writes, contact sheets, image preprocessing."""

import re

import imageio.v2
import numpy as np
import pytest

from hcjax.io import (
    MediaError,
    contact_sheet,
    image_to_unit_range,
    read_image,
    read_video,
    resize_center_crop,
    to_uint8,
    write_mp4,
    write_png,
)


def _pattern(frames: int, height: int, width: int) -> np.ndarray:
    """Smooth gradients (R across, G down, B over time) plus a white square moving right."""
    y, x = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        video[f, ..., 0] = x * 255 // (width - 1)
        video[f, ..., 1] = y * 255 // (height - 1)
        video[f, ..., 2] = f * 255 // max(frames - 1, 1)
        video[f, 8:20, 4 + 5 * f : 16 + 5 * f] = 255
    return video


def test_mp4_round_trip(tmp_path):
    video = _pattern(9, 48, 80)
    path = tmp_path / "clip.mp4"
    write_mp4(path, video, fps=24)
    decoded = read_video(path)
    assert decoded.shape == video.shape and decoded.dtype == np.uint8
    # Measured about 1.9 at quality 8 (CRF 10, yuv420p); errors concentrate on the square's sharp edges.
    assert np.abs(decoded.astype(np.int16) - video).mean() < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_mp4_size_not_multiple_of_16_is_kept(tmp_path):
    path = tmp_path / "small.mp4"
    write_mp4(path, _pattern(5, 40, 56))
    assert read_video(path).shape == (5, 40, 56, 3)


def test_mp4_overwrites_existing_file(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    write_mp4(path, _pattern(3, 16, 16))
    assert read_video(path).shape == (3, 16, 16, 3)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 17, 16, 3), np.uint8),  # odd height
        np.zeros((16, 16, 3), np.uint8),  # wrong ndim
        np.zeros((2, 16, 16, 3), np.float32),  # not uint8
    ],
)
def test_invalid_frames_write_nothing(tmp_path, frames):
    with pytest.raises(MediaError):
        write_mp4(tmp_path / "bad.mp4", frames)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    real_get_writer = imageio.v2.get_writer

    def failing_get_writer(*args, **kwargs):
        writer = real_get_writer(*args, **kwargs)
        append, count = writer.append_data, [0]

        def append_data(frame, *a, **k):
            count[0] += 1
            if count[0] == 3:
                raise RuntimeError("disk full")
            return append(frame, *a, **k)

        writer.append_data = append_data
        return writer

    monkeypatch.setattr(imageio.v2, "get_writer", failing_get_writer)
    (tmp_path / "clip.mp4").write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(tmp_path / "clip.mp4", _pattern(6, 16, 16))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert (tmp_path / "clip.mp4").read_bytes() == b"previous"  # the old file is untouched


def test_png_failure_leaves_no_file(tmp_path, monkeypatch):
    from PIL import Image

    def broken_save(self, *args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"partial")
        raise OSError("no space left")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="no space"):
        write_png(tmp_path / "frame.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_png_round_trip(tmp_path):
    image = _pattern(1, 21, 33)[0]  # odd sizes are fine for PNG
    write_png(tmp_path / "frame.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "frame.png"), image)
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]


@pytest.mark.parametrize("reader", [read_video, read_image])
def test_missing_and_garbage_files_raise_media_error(tmp_path, reader):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(MediaError, match=re.escape(str(missing))):
        reader(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not media" * 100)
    with pytest.raises(MediaError, match=re.escape(str(garbage))):
        reader(garbage)


def test_read_image_converts_to_rgb(tmp_path):
    from PIL import Image

    Image.new("L", (5, 3), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 3), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "gray.png").shape == (3, 5, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png")[0, 0], [1, 2, 3])


def test_contact_sheet_grid():
    frames = np.random.default_rng(0).integers(0, 255, (9, 16, 24, 3), dtype=np.uint8)
    sheet = contact_sheet(frames, columns=3, gap=2)
    assert sheet.shape == (3 * 16 + 2 * 2, 3 * 24 + 2 * 2, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[:16, :24], frames[0])
    np.testing.assert_array_equal(sheet[-16:, -24:], frames[8])
    np.testing.assert_array_equal(sheet[16:18], 255)  # horizontal gap
    np.testing.assert_array_equal(sheet[:, 24:26], 255)  # vertical gap


def test_contact_sheet_subsamples_including_ends():
    frames = np.zeros((33, 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(33)  # frame index stamped in a pixel
    sheet = contact_sheet(frames, max_frames=16, gap=1)
    assert sheet.shape == (4 * 4 + 3, 4 * 4 + 3, 3)  # 16 frames -> 4x4
    picked = sheet[::5, ::5, 0].ravel()
    assert len(set(picked.tolist())) == 16 and picked[0] == 0 and picked[-1] == 32
    assert np.all(np.diff(picked.astype(int)) > 0)


def test_contact_sheet_default_columns_and_blank_cells():
    sheet = contact_sheet(np.zeros((5, 2, 2, 3), np.uint8), gap=0)
    assert sheet.shape == (4, 6, 3)  # ceil(sqrt(5)) = 3 columns, 2 rows
    np.testing.assert_array_equal(sheet[2:, 4:], 255)  # the unused sixth cell stays white


def test_to_uint8():
    x = np.array([-1.0, 1.0, 0.0, -5.0, 7.0, 0.5], np.float32).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(to_uint8(x).ravel(), [0, 255, 128, 0, 255, 191])
    assert to_uint8(x.astype(np.float16)).dtype == np.uint8
    with pytest.raises(MediaError):
        to_uint8(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(MediaError, match="NaN"):
        to_uint8(np.full((1, 2, 2, 3), np.nan, np.float32))


def test_image_to_unit_range():
    out = image_to_unit_range(np.array([[[0, 255, 128]]], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)
    np.testing.assert_array_equal(to_uint8(image_to_unit_range(np.arange(256, dtype=np.uint8))), np.arange(256))


@pytest.mark.parametrize("src, dst", [((60, 100), (32, 48)), ((100, 60), (48, 32)), ((30, 30), (64, 96))])
def test_resize_center_crop_keeps_centre(src, dst):
    (h, w), (height, width) = src, dst
    image = np.zeros((h, w, 3), np.uint8)
    image[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5] = 255  # centred white square
    out = resize_center_crop(image, height, width)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert abs(ys.mean() - (height - 1) / 2) <= 1 and abs(xs.mean() - (width - 1) / 2) <= 1


def test_resize_center_crop_identity():
    image = _pattern(1, 20, 30)[0]
    np.testing.assert_array_equal(resize_center_crop(image, 20, 30), image)
