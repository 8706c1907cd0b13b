"""hcjax.pipelines.avatar_media: HunyuanVideo-Avatar's reference-image size rule (hand arithmetic), LANCZOS and
stretched-LLaVA preprocessing against Pillow / torchvision, ``get_facemask`` rectangles on hand-computed boxes,
torch-exact bilinear latent masks, mask images, and the input errors (boxes, masks, audio). Offline and fast."""

import struct
import wave

import chex
import numpy as np
import pytest
from PIL import Image

from hcjax.io.video import MediaError
from hcjax.pipelines.avatar_media import (avatar_audio, check_face_box, face_box_mask, face_masks, latent_face_mask,
                                          llava_pixels_stretched, mask_image, parse_face_box, reference_image,
                                          reference_size, scale_box)

CLIP_MEAN = (0.48145466, 0.4578275, 0.4082107)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- reference image


@pytest.mark.parametrize("hw, image_size, expected", [
    # 704: scale 704/1080, w 1251.6/64 = 19.56 -> 1280, h 704; 1280*704 = 901120 > 704*1216 = 856064, so
    # scale = sqrt(856064 / 1920 / 1080) = 0.64253: w 1233.7/64 = 19.28 -> 1216, h 693.9/64 = 10.84 -> 704
    ((1080, 1920), 704, (704, 1216)),
    ((1920, 1080), 704, (1216, 704)),
    ((704, 704), 704, (704, 704)),
    ((300, 300), 704, (704, 704)),
    # 736 / 64 = 11.5 and 800 / 64 = 12.5: Python's round goes to the even neighbour (768 both times)
    ((704, 736), 704, (704, 768)),
    ((704, 800), 704, (704, 768)),
    # 512: w 910.2/64 = 14.22 -> 896; 896*512 = 458752 > 512*768 = 393216 -> scale sqrt(393216/2073600) = 0.43547:
    # w 836.1/64 = 13.06 -> 832, h 470.3/64 = 7.35 -> 448
    ((1080, 1920), 512, (448, 832)),
    # 640 is not in the table: long budget 1.5 * 640 = 960. w 2560, h 640; 2560*640 > 614400 -> scale
    # sqrt(614400 / 921600) = 0.8165: w 1567.7/64 = 24.49 -> 1536, h 391.9/64 = 6.12 -> 384
    ((480, 1920), 640, (384, 1536)),
])
def test_reference_size(hw, image_size, expected):
    assert reference_size(*hw, image_size=image_size) == expected


def test_reference_size_rejects_degenerate():
    with pytest.raises(ValueError, match=r"too elongated.*crop it"):
        reference_size(1, 2000)
    with pytest.raises(ValueError, match="non-empty"):
        reference_size(0, 10)
    with pytest.raises(ValueError, match="rounds to a side of 0"):
        reference_size(100, 100, image_size=16)


def test_reference_image_is_pil_lanczos():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (270, 480, 3), dtype=np.uint8)
    out = reference_image(image)
    chex.assert_shape(out, (704, 1216, 3))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(image).resize((1216, 704), Image.LANCZOS)))
    with pytest.raises(ValueError, match=r"RGB uint8"):
        reference_image(image.astype(np.float32))


def test_llava_pixels_stretched():
    rng = np.random.default_rng(1)
    for shape in [(50, 90, 3), (700, 400, 3)]:   # enlarged and shrunk (antialiased), both stretched
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        out = llava_pixels_stretched(image)
        chex.assert_shape(out, (336, 336, 3))
        chex.assert_type(out, np.float32)
        try:
            import torchvision.transforms as T

            expected = T.Compose([T.Resize((336, 336), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                                  T.Normalize(CLIP_MEAN, CLIP_STD)])(Image.fromarray(image)).permute(1, 2, 0).numpy()
        except ImportError:
            resized = np.asarray(Image.fromarray(image).resize((336, 336), Image.BILINEAR), np.float64)
            expected = (resized / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    # stretched, not padded: a left-red / right-blue image stays split down the middle, no white border
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :150, 0] = 255
    image[:, 150:, 2] = 255
    out = llava_pixels_stretched(image)
    assert out[0, 0, 0] > 1.5 and out[-1, -1, 2] > 1.5 and out[0, 0, 2] < -1.0


# ---------------------------------------------------------------- face boxes


def _rect(h, w, rows, cols):
    m = np.zeros((h, w), np.float32)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


@pytest.mark.parametrize("box, rows, cols", [
    # x2 = 60, y2 = 28; grown 30 x 24 about centre (55, 24) -> x 40..70, y 12..36
    ((50, 20, 10, 8), (12, 36), (40, 70)),
    # top-left clip: centre (10, 5), half sizes 30 / 15 -> x 0..40, y 0..20
    ((0, 0, 20, 10), (0, 20), (0, 40)),
    # bottom-right clip: centre (195, 95), half 15 -> x 180..200, y 80..100
    ((190, 90, 10, 10), (80, 100), (180, 200)),
    # floor division: centre 9 // 2 = 4, half 9 // 2 = 4 -> x 0..8 (true division would give 0..9);
    # y: centre 82 // 2 = 41, half 6 // 2 = 3 -> y 38..44
    ((3, 40, 3, 2), (38, 44), (0, 8)),
    # float box: x2 = 6.3, ww = 8.7, centre 9.7 // 2 = 4.0, half 4.0 -> x 0..8; y2 = 14.75, hh = 12.75,
    # centre 25.25 // 2 = 12.0, half 6.0 -> y 6..18 (true division: x 0..9, y 6..19)
    ((3.4, 10.5, 2.9, 4.25), (6, 18), (0, 8)),
    # no face: the whole image
    ((0, 0, 200, 100), (0, 100), (0, 200)),
])
def test_face_box_mask(box, rows, cols):
    mask = face_box_mask(100, 200, box)
    chex.assert_shape(mask, (100, 200))
    chex.assert_type(mask, np.float32)
    np.testing.assert_array_equal(mask, _rect(100, 200, rows, cols))


def test_face_box_mask_area():
    # area 1.25 (get_facemask's default): 40 x 40 box at (80, 30) -> 50 x 50 about (100, 50): x 75..125, y 25..75
    np.testing.assert_array_equal(face_box_mask(100, 200, (80, 30, 40, 40), area=1.25),
                                  _rect(100, 200, (25, 75), (75, 125)))


def test_parse_and_check_face_box():
    assert parse_face_box("120, 80,200 ,240") == (120.0, 80.0, 200.0, 240.0)
    assert parse_face_box("1.5,2,3,4.25") == (1.5, 2.0, 3.0, 4.25)
    for bad in ["1,2,3", "1,2,3,4,5", "a,b,c,d", "", "1,2,nan,4"]:
        with pytest.raises(ValueError, match=r"'x,y,w,h'"):
            parse_face_box(bad)
    check_face_box((0, 0, 640, 480), 480, 640)
    check_face_box((10.5, 20, 100, 100), 480, 640)
    with pytest.raises(ValueError, match=r"negative size.*640x480 \(WxH\)"):
        check_face_box((10, 10, -5, 20), 480, 640, "face box")
    with pytest.raises(ValueError, match=r"zero size"):
        check_face_box((10, 10, 0, 20), 480, 640)
    with pytest.raises(ValueError, match=r"not inside the 640x480 \(WxH\) image.*x \+ w <= 640"):
        check_face_box((600, 10, 50, 20), 480, 640)
    with pytest.raises(ValueError, match=r"not inside"):
        check_face_box((-1, 10, 50, 20), 480, 640)
    with pytest.raises(ValueError, match=r"not inside"):
        check_face_box((0, 470, 50, 20), 480, 640)
    assert scale_box((100, 50, 40, 20), (1080, 1920), (704, 1216)) == pytest.approx(
        (100 * 1216 / 1920, 50 * 704 / 1080, 40 * 1216 / 1920, 20 * 704 / 1080))


# ---------------------------------------------------------------- latent masks


def _torch_bilinear(x, out_hw):
    import torch

    t = torch.from_numpy(np.asarray(x, np.float32))
    t = t[None] if t.ndim == 3 else t[None, None]
    out = torch.nn.functional.interpolate(t, out_hw, mode="bilinear", align_corners=False)
    return out[0].numpy() if x.ndim == 3 else out[0, 0].numpy()


@pytest.mark.parametrize("in_hw, out_hw", [((704, 1216), (88, 152)), ((128, 64), (16, 8)), ((100, 37), (13, 29)),
                                           ((90, 77), (11, 10)), ((7, 5), (20, 11)), ((1, 1), (3, 2))])
def test_latent_face_mask_matches_torch(in_hw, out_hw):
    pytest.importorskip("torch")
    rng = np.random.default_rng(sum(in_hw) + sum(out_hw))
    binary = (rng.random((3,) + in_hw) > 0.5).astype(np.float32)
    smooth = rng.random(in_hw).astype(np.float32)
    for x in (binary, smooth, binary[1]):
        out = latent_face_mask(x, out_hw)
        chex.assert_shape(out, x.shape[:-2] + out_hw)
        chex.assert_type(out, np.float32)
        expected = _torch_bilinear(x, out_hw)
        # values lie in [0, 1]: the error relative to that range is below 1e-6 (float32 rounding order only:
        # torch's CPU kernel sums the taps in another order); 8x shrinks of binary masks are exact
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
        if in_hw[0] == 8 * out_hw[0] and in_hw[1] == 8 * out_hw[1] and x is not smooth:
            np.testing.assert_array_equal(out, expected)


def test_latent_face_mask_edges():
    # 8x shrink samples pixel 8 j + 3.5: a rectangle 12..36 wide of 64 -> latent cols 0 .. 7 get
    # 0, 0.5 (pixels 11, 12), 1, 1, 0.5 (pixels 35, 36), 0, 0, 0
    mask = _rect(64, 64, (0, 64), (12, 36))
    np.testing.assert_array_equal(latent_face_mask(mask, (8, 8))[0], [0, 0.5, 1, 1, 0.5, 0, 0, 0])


def test_face_masks():
    masks = face_masks((64, 128), [None, (16, 8, 16, 8)])
    chex.assert_shape(masks, (2, 8, 16))
    np.testing.assert_array_equal(masks[0], np.ones((8, 16), np.float32))
    np.testing.assert_array_equal(masks[1], latent_face_mask(face_box_mask(64, 128, (16, 8, 16, 8)), (8, 16)))
    # a box on the original 128 x 256 image is halved onto the 64 x 128 reference
    np.testing.assert_array_equal(face_masks((64, 128), [(32, 16, 32, 16)], orig_hw=(128, 256)), masks[1:])
    with pytest.raises(ValueError, match=r"character 1.*not inside the 256x128"):
        face_masks((64, 128), [(250, 16, 32, 16)], orig_hw=(128, 256))
    with pytest.raises(ValueError, match="no faces"):
        face_masks((64, 128), [])
    mask = np.zeros((64, 128), np.uint8)
    mask[8:24, 16:48] = 255
    chex.assert_shape(face_masks((64, 128), [mask], latent_hw=(4, 8)), (1, 4, 8))


# ---------------------------------------------------------------- mask images


def test_mask_image(tmp_path):
    mask = np.zeros((20, 40), np.uint8)
    mask[5:15, 10:30] = 255
    # 2x bilinear: output row i reads source (i + 0.5) / 2 - 0.5; rows 9 / 10 get 0.25 / 0.75 of the block's
    # first row, rows 29 / 30 0.75 / 0.25 of its last -> rows 10..30, cols 20..60 after the 0.5 threshold
    expected = _rect(40, 80, (10, 30), (20, 60))
    path = tmp_path / "mask.png"
    Image.fromarray(np.repeat(mask[..., None], 3, axis=-1)).save(path)
    for source in (path, str(path), mask, mask > 0, np.repeat(mask[..., None], 3, axis=-1)):
        out = mask_image(source, 40, 80)
        chex.assert_shape(out, (40, 80))
        chex.assert_type(out, np.float32)
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mask_image(mask, 20, 40), (mask > 127).astype(np.float32))


def test_mask_image_errors(tmp_path):
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"black\.png has no face region.*all black.*white"):
        mask_image(path, 40, 80)
    with pytest.raises(ValueError, match="no face region"):
        mask_image(np.full((20, 40), 100, np.uint8), 40, 80)   # all below mid gray
    with pytest.raises(MediaError, match="no mask image"):
        mask_image(tmp_path / "missing.png", 40, 80)
    with pytest.raises(ValueError, match=r"uint8 or bool"):
        mask_image(np.ones((20, 40), np.float32), 40, 80)


# ---------------------------------------------------------------- audio


def _write_wav(path, samples_int16, rate, channels=1):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.asarray(samples_int16, "<i2").tobytes())
    return path


def _raw_wav(path, rate, payload=b"\0\0" * 2000):
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_avatar_audio(tmp_path):
    t = np.arange(16000)
    ints = np.round(8000 * np.sin(2 * np.pi * 220 * t / 16000)).astype(np.int16)
    out = avatar_audio(_write_wav(tmp_path / "a.wav", ints, 16000))
    chex.assert_shape(out, (16000,))
    chex.assert_type(out, np.float32)
    np.testing.assert_array_equal(out, ints.astype(np.float32) / 32768)
    chex.assert_shape(avatar_audio(_write_wav(tmp_path / "b.wav", ints[:4000], 8000)), (8000,))   # resampled
    chex.assert_shape(avatar_audio(_write_wav(tmp_path / "c.wav", ints[:640], 16000)), (640,))    # one frame


def test_avatar_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="has no samples"):
        avatar_audio(_write_wav(tmp_path / "empty.wav", [], 16000))
    with pytest.raises(MediaError, match=r"too short: 639 samples \(0\.040 s\).*640 samples = 40 ms at 25 fps"):
        avatar_audio(_write_wav(tmp_path / "short.wav", np.ones(639), 16000))
    with pytest.raises(MediaError, match=r"sample rate of 500 Hz.*16 kHz.*8000 Hz"):
        avatar_audio(_write_wav(tmp_path / "slow.wav", np.ones(4000), 500))
    with pytest.raises(MediaError, match=r"sample rate of 0 Hz"):
        avatar_audio(_raw_wav(tmp_path / "zero.wav", 0))
    with pytest.raises(MediaError, match="no audio file"):
        avatar_audio(tmp_path / "missing.wav")
    nan_wav = tmp_path / "nan.wav"
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    payload = np.full(1000, np.nan, "<f4").tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    nan_wav.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(MediaError, match="NaN"):
        avatar_audio(nan_wav)
