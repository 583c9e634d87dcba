import io

import numpy as np
import pytest
from PIL import Image

from edge_app.preprocess import ImageError, fit_square, load_rgb, preprocess
from tests.conftest import RED, cell


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "YCbCr", "HSV"])
def test_every_mode_becomes_uint8_rgb(tmp_path, mode):
    img = cell(RED).convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        (np.linspace(0, 1, 40 * 48).reshape(48, 40) * {"I;16": 65535, "I": 65535, "F": 1.0}[mode]).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    ext = "tiff" if mode in ("I;16", "I", "F", "CMYK", "YCbCr", "HSV", "LA") else "png"
    if mode in ("YCbCr", "HSV"):
        src: object = img  # no common file format stores these: pass the decoded image
    else:
        src = tmp_path / f"x.{ext}"
        img.save(src)
    out = preprocess(src, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out.max() > 0


def test_sixteen_bit_keeps_contrast_instead_of_clipping(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "r.tiff")
    out = np.asarray(load_rgb(tmp_path / "r.tiff"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert 100 < out[32, 0, 0] < 155  # mid-grey, not saturated


def test_transparency_composites_on_black(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (255, 255, 255, 0))
    rgba.save(tmp_path / "t.png")
    assert np.asarray(load_rgb(tmp_path / "t.png")).max() == 0


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    up = np.asarray(load_rgb(tmp_path / "o.jpg"))
    assert up.shape == (40, 20, 3)  # portrait after transposing
    assert up[:10, :, 0].mean() > 200 and up[-10:, :, 0].mean() < 50  # left strip is now on top


def test_pad_keeps_aspect_and_stretch_fills():
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    padded = fit_square(img, 20, "pad")
    assert padded.shape == (20, 20, 3)
    assert padded[0].max() == 0 and padded[10].min() == 255  # black bars top and bottom
    assert fit_square(img, 20, "stretch").min() == 255
    with pytest.raises(ValueError):
        fit_square(img, 20, "crop")


def test_pad_places_the_cell_like_pillow_and_keeps_its_colour():
    """The resized cell sits where ImageOps.pad put it (the shipped models were trained so), and area averaging keeps its mean colour."""
    from PIL import ImageOps

    rng = np.random.default_rng(0)
    for w, h in [(130, 121), (97, 140), (40, 33), (64, 64)]:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = fit_square(arr, 64, "pad")
        pillows = np.asarray(ImageOps.pad(Image.fromarray(arr), (64, 64), Image.Resampling.BILINEAR, color=(0, 0, 0)))
        assert np.array_equal(ours.max(axis=2) > 0, pillows.max(axis=2) > 0), (w, h)  # same black bars
        if w > 64 and h > 64:
            inside = ours[ours.max(axis=2) > 0]
            assert np.allclose(inside.reshape(-1, 3).mean(0), arr.reshape(-1, 3).mean(0), atol=1.0)


@pytest.mark.parametrize("size", [(1, 1), (1000, 3), (3, 700)])
def test_odd_sizes(size):
    out = preprocess(Image.new("RGB", size, (9, 9, 9)), 24)
    assert out.shape == (24, 24, 3)


def test_same_function_for_file_and_decoded_image(tmp_path):
    img = cell(RED, size=(57, 33))
    img.save(tmp_path / "c.png")
    assert np.array_equal(preprocess(tmp_path / "c.png", 24), preprocess(img, 24))


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, I am a text file\n" * 10, "not an image"),
    (None, "corrupt image"),  # truncated PNG
])
def test_bad_files_get_one_line_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(_png_bytes(cell(RED, size=(200, 200)))[:300] if content is None else content)
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_rgb(tmp_path / "gone.png")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    Image.new("L", (7000, 6000)).save(tmp_path / "bomb.png")  # 42 Mpx, compresses to a few KB
    with pytest.raises(ImageError, match="too large"):
        load_rgb(tmp_path / "bomb.png")


def test_byte_limit(tmp_path):
    cell(RED).save(tmp_path / "c.png")
    with pytest.raises(ImageError, match="file too large"):
        load_rgb(tmp_path / "c.png", max_bytes=10)


def test_permission_denied(tmp_path, not_root):
    path = tmp_path / "locked.png"
    cell(RED).save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        load_rgb(path)


def test_permission_denied_mapping(tmp_path, monkeypatch):
    """Runs as root too, where chmod cannot lock a file: the OS error still becomes a one-line reason."""
    path = tmp_path / "locked.png"
    cell(RED).save(path)

    def deny(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(ImageError, match="permission denied"):
        load_rgb(path)


def _noise(shape, dtype=np.uint8, top=255, seed=0):
    return np.random.default_rng(seed).integers(0, top + 1, shape).astype(dtype)


@pytest.mark.parametrize("interlace,old_opencv", [(False, False), (True, False), (False, True)])
def test_plain_png_fast_path_matches_pillow(tmp_path, monkeypatch, interlace, old_opencv):
    """8-bit RGB PNGs are decoded by OpenCV; the pixels must be Pillow's, bit for bit."""
    import cv2

    from edge_app import preprocess as pp

    if old_opencv:  # before 4.11 OpenCV decodes to BGR only
        monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB", raising=False)
    path = tmp_path / "n.png"
    Image.fromarray(_noise((37, 53, 3))).save(path, interlace=interlace)
    decoded = []
    real = pp._decode_png
    monkeypatch.setattr(pp, "_decode_png", lambda *a: decoded.append(1) or real(*a))
    fast = np.asarray(load_rgb(path))
    with Image.open(path) as im:
        assert np.array_equal(fast, np.asarray(im.convert("RGB")))
    assert decoded, "the fast path was not taken"


def test_corrupt_png_data_behind_a_good_header_is_still_reported(tmp_path):
    path = tmp_path / "c.png"
    data = bytearray(_png_bytes(Image.fromarray(_noise((64, 64, 3)))))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # header intact, image data broken
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt image"):
        load_rgb(path)


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(_noise((20, 30, 4))),  # alpha: composited onto black, which OpenCV would not do
    lambda: Image.fromarray(_noise((20, 30), np.uint16, 65535)),  # 16-bit
    lambda: Image.fromarray(_noise((20, 30))).convert("P"),
])
def test_other_pngs_keep_pillows_handling(tmp_path, monkeypatch, make):
    from edge_app import preprocess as pp

    path = tmp_path / "o.png"
    make().save(path)
    monkeypatch.setattr(pp, "_decode_png", lambda *a: pytest.fail("fast path taken for a non-plain PNG"))
    assert np.asarray(load_rgb(path)).shape == (20, 30, 3)
