"""Decoding is faithful: each mode, generated here with Pillow, lands as a known image."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evergreen.config import IngestConfig
from tasks.ingest import ReadLog, read_source

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (6, 10), dtype=np.uint8)  # H=6, W=10: non-square on purpose
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)


def folder_of(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """root/<label>/<name> for each 'label/name' -> bytes."""
    root = tmp_path / "src"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def read_one(tmp_path, name: str, data: bytes, **cfg):
    """The single image of a one-file folder as (C, H, W), and how it was decoded."""
    root = folder_of(tmp_path, {f"a/{name}": data})
    batch, rejects = read_source(str(root), IngestConfig(**cfg))
    assert rejects == [] and len(batch) == 1
    return batch.x[0], batch.decoded[0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    deep = (GRAY.astype(np.uint16) * 257)  # 0..65535 exactly
    deep[0, 0], deep[0, 1] = 65535, 128  # 128/257 rounds to 0: scaled, where a clip gives 128
    x, how = read_one(tmp_path, "d.png", encoded(Image.fromarray(deep), "PNG"))
    expected = np.round(deep / 257).astype(np.uint8)
    np.testing.assert_array_equal(x[0], expected)
    assert "16-bit scaled" in how


@pytest.mark.parametrize("background, fill", [([255, 255, 255], 255), ([0, 0, 0], 0)])
def test_gray_alpha_png_is_composited_over_the_background(tmp_path, background, fill):
    alpha = np.zeros_like(GRAY)
    alpha[:, 5:] = 255  # right half opaque, left half transparent
    la = Image.merge("LA", [Image.fromarray(GRAY), Image.fromarray(alpha)])
    x, how = read_one(tmp_path, "la.png", encoded(la, "PNG"), alpha_background=background)
    assert x.shape == (1, 6, 10)
    np.testing.assert_array_equal(x[0, :, 5:], GRAY[:, 5:])
    assert (x[0, :, :5] == fill).all()
    assert "alpha over" in how


def test_rgba_half_transparent_blends_with_the_background(tmp_path):
    alpha = np.full((6, 10), 255, np.uint8)
    alpha[0] = 0
    alpha[1] = 128
    rgba = Image.fromarray(np.dstack([RGB, alpha]), "RGBA")
    x, _ = read_one(tmp_path, "rgba.png", encoded(rgba, "PNG"))
    np.testing.assert_array_equal(x[:, 2:].transpose(1, 2, 0), RGB[2:])
    assert (x[:, 0] == 255).all()
    blended = x[:, 1].transpose(1, 0).astype(int)
    np.testing.assert_allclose(blended, RGB[1].astype(float) * 128 / 255 + 255 * 127 / 255, atol=1.5)


def test_palette_with_transparency_index(tmp_path):
    index = (GRAY // 64).astype(np.uint8)  # 4 palette entries
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * (256 * 3 - 12)
    img = Image.fromarray(index, "P")
    img.putpalette(palette)
    x, how = read_one(tmp_path, "p.png", encoded(img, "PNG", transparency=3))
    colours = np.array(palette[:12]).reshape(4, 3)
    expected = np.where((index == 3)[..., None], 255, colours[index])  # index 3 -> background
    np.testing.assert_array_equal(x.transpose(1, 2, 0), expected)
    assert "palette with transparency" in how


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (10, 6), (0, 255, 0, 0))  # no cyan/yellow/black, full magenta
    x, how = read_one(tmp_path, "c.tif", encoded(cmyk, "TIFF"))
    assert (x.transpose(1, 2, 0) == [255, 0, 255]).all()
    assert "CMYK converted" in how


def with_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, fmt, exif=exif.tobytes())


@pytest.mark.parametrize("orientation, shown", [
    (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(tmp_path, orientation, shown):
    x, how = read_one(tmp_path, "e.png", with_orientation(Image.fromarray(GRAY), "PNG", orientation))
    np.testing.assert_array_equal(x[0], shown(GRAY))
    assert f"exif orientation {orientation}" in how


def test_exif_rotated_jpeg_lands_upright(tmp_path):
    upright = np.zeros((32, 48), np.uint8)
    upright[:8] = 255  # a white band along the top, as the photo is meant to be seen
    stored = np.rot90(upright, 1)  # the camera stored it turned; orientation 6 turns it back
    x, _ = read_one(tmp_path, "r.jpg", with_orientation(Image.fromarray(stored), "JPEG", 6))
    assert x.shape == (1, 32, 48)
    assert x[0, :8].mean() > 240 and x[0, 8:].mean() < 15


def netpbm(magic: bytes, arr: np.ndarray, maxval: int) -> bytes:
    h, w = arr.shape[:2]
    dtype = ">u2" if maxval > 255 else np.uint8
    return magic + f"\n{w} {h}\n{maxval}\n".encode() + arr.astype(dtype).tobytes()


def test_pgm_8_and_16_bit(tmp_path):
    x, _ = read_one(tmp_path, "g.pgm", netpbm(b"P5", GRAY, 255))
    np.testing.assert_array_equal(x[0], GRAY)
    deep = GRAY.astype(np.uint16) * 257
    x16, how = read_one(tmp_path / "16", "g16.pgm", netpbm(b"P5", deep, 65535))
    np.testing.assert_array_equal(x16[0], GRAY)
    assert "16-bit scaled" in how


def test_ppm_and_pbm(tmp_path):
    x, _ = read_one(tmp_path, "c.ppm", netpbm(b"P6", RGB, 255))
    np.testing.assert_array_equal(x.transpose(1, 2, 0), RGB)
    bits = GRAY > 127
    x1, _ = read_one(tmp_path / "b", "b.pbm", encoded(Image.fromarray(bits), "PPM"))
    np.testing.assert_array_equal(x1[0], np.where(bits, 255, 0))


def test_tiff_16_bit_and_first_page_only(tmp_path):
    pages = [Image.fromarray(GRAY.astype(np.uint16) * 257), Image.fromarray(255 - GRAY)]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    x, _ = read_one(tmp_path, "t.tiff", buf.getvalue())
    np.testing.assert_array_equal(x[0], GRAY)


def test_webp_lossless(tmp_path):
    x, _ = read_one(tmp_path, "w.webp", encoded(Image.fromarray(RGB), "WEBP", lossless=True))
    np.testing.assert_array_equal(x.transpose(1, 2, 0), RGB)


def test_gif_first_frame(tmp_path):
    frames = [Image.fromarray(GRAY).convert("P"), Image.fromarray(255 - GRAY).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    x, _ = read_one(tmp_path, "g.gif", buf.getvalue())
    first = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    np.testing.assert_array_equal(x[0], first)
    assert x.shape == (1, 6, 10)


def test_bmp_and_jpeg(tmp_path):
    x, _ = read_one(tmp_path, "b.bmp", encoded(Image.fromarray(RGB), "BMP"))
    np.testing.assert_array_equal(x.transpose(1, 2, 0), RGB)
    flat = np.full((16, 16), 90, np.uint8)
    xj, _ = read_one(tmp_path / "j", "j.jpeg", encoded(Image.fromarray(flat), "JPEG", quality=95))
    assert np.abs(xj.astype(int) - 90).max() <= 2


def test_mixed_gray_and_rgb_follow_ingest_channels(tmp_path):
    root = folder_of(tmp_path, {"a/g.png": encoded(Image.fromarray(GRAY), "PNG"),
                                "b/c.png": encoded(Image.fromarray(RGB), "PNG")})
    auto, _ = read_source(str(root), IngestConfig())
    assert auto.x.shape == (2, 3, 6, 10)  # one colour image: all RGB, gray expanded
    g = auto.sources.index("a/g.png")
    np.testing.assert_array_equal(auto.x[g], np.stack([GRAY] * 3))
    gray, _ = read_source(str(root), IngestConfig(channels="gray"))
    assert gray.x.shape == (2, 1, 6, 10)
    np.testing.assert_array_equal(gray.x[1 - g, 0], np.asarray(Image.fromarray(RGB).convert("L")))
    assert "RGB->L" in gray.decoded[1 - g]


def test_non_square_sizes_keep_their_shape_or_follow_the_resize_policy(tmp_path):
    tall = np.full((20, 8), 200, np.uint8)
    root = folder_of(tmp_path, {"a/wide.png": encoded(Image.fromarray(GRAY), "PNG"),
                                "a/wide2.png": encoded(Image.fromarray(GRAY), "PNG"),
                                "b/tall.png": encoded(Image.fromarray(tall), "PNG")})
    log = ReadLog()
    batch, _ = read_source(str(root), IngestConfig(), log=log)
    assert batch.x.shape == (3, 1, 6, 10)  # the median size, HxW
    np.testing.assert_array_equal(batch.x[batch.sources.index("a/wide.png"), 0], GRAY)
    assert log.notes and "6x10" in log.notes[0]
    padded, _ = read_source(str(root), IngestConfig(image_size=[6, 10], resize="pad",
                                                    alpha_background=[0, 0, 0]))
    t = padded.x[padded.sources.index("b/tall.png"), 0]
    assert (t[:, :3] == 0).all() and (t[:, -3:] == 0).all() and (t[:, 4:6] == 200).all()
    cropped, _ = read_source(str(root), IngestConfig(image_size=[6, 10], resize="crop"))
    assert (cropped.x[cropped.sources.index("b/tall.png"), 0] == 200).all()


def test_auto_size_of_photos_of_many_sizes_is_the_median_capped(tmp_path):
    files = {f"a/{i}.png": encoded(Image.fromarray(np.zeros((s, s + 2), np.uint8)), "PNG")
             for i, s in enumerate([20, 30, 40, 50, 300])}
    log = ReadLog()
    batch, _ = read_source(str(folder_of(tmp_path, files)), IngestConfig(), log=log)
    assert batch.x.shape[2:] == (41, 41)  # median 40x42, near square
    capped, _ = read_source(str(tmp_path / "src"), IngestConfig(max_auto_side=16))
    assert capped.x.shape[2:] == (16, 16)
    assert "median of 5 images" in log.notes[0]


def test_eps_and_other_formats_are_never_probed(tmp_path):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    root = folder_of(tmp_path, {"a/x.png": eps, "a/ok.png": encoded(Image.fromarray(GRAY), "PNG")})
    batch, rejects = read_source(str(root), IngestConfig())
    assert len(batch) == 1 and [r.source for r in rejects] == ["a/x.png"]
    assert "not a PNG, JPEG" in rejects[0].reason


# --- layouts: a labels CSV beside the images, class folders with their own CSV -------------

def test_gtsrb_test_layout_labels_from_the_csv_one_folder_up(tmp_path):
    images = tmp_path / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(4):
        img = np.zeros((12, 10, 3), np.uint8)
        img[2:8, 3:7] = 60 * (i + 1)  # the sign, inside its ROI
        (images / f"{i:05d}.ppm").write_bytes(netpbm(b"P6", img, 255))
        rows.append(f"{i:05d}.ppm;10;12;3;2;6;7;{i % 2}")
    (tmp_path / "Final_Test" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    (images / "GT-final_test.test.csv").write_text(rows[0].rsplit(";", 1)[0] + "\n")  # no labels
    log = ReadLog()
    batch, rejects = read_source(str(images), IngestConfig(), log=log)
    assert rejects == [] and sorted(batch.labels) == ["0", "0", "1", "1"]
    assert any("GT-final_test.csv" in n for n in log.notes)
    assert [s.source for s in log.skipped] == ["GT-final_test.test.csv"]
    roi, _ = read_source(str(images), IngestConfig(crop_roi=True))
    assert roi.x.shape[2:] == (6, 4)  # rows 2..7, columns 3..6: X2/Y2 inclusive
    k = roi.sources.index("00002.ppm")
    assert (roi.x[k] == 180).all()


def test_kaggle_id_label_csv_with_ids_without_suffix(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(encoded(Image.fromarray(GRAY + i), "PNG"))
    (root / "train.csv").write_text("id,label\n0,cat\n1,dog\n2,cat\n")
    batch, rejects = read_source(str(root), IngestConfig())
    assert rejects == [] and list(batch.labels) == ["cat", "dog", "cat"]


def test_an_image_missing_from_the_labels_csv_is_refused_by_name(tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    for name in ("a.png", "b.png"):
        (root / name).write_bytes(encoded(Image.fromarray(GRAY), "PNG"))
    (root / "labels.csv").write_text("file,class\na.png,1\n")
    batch, rejects = read_source(str(root), IngestConfig())
    assert len(batch) == 1 and rejects[0].source == "b.png" and "no label" in rejects[0].reason


def test_os_droppings_and_class_folder_csvs_are_skipped_and_named(tmp_path):
    png = encoded(Image.fromarray(GRAY), "PNG")
    root = folder_of(tmp_path, {"a/1.png": png, "a/GT-a.csv": b"Filename;ClassId\n1.png;0\n",
                                "a/._1.png": b"\0\5\26\7", "a/Thumbs.db": b"x", ".DS_Store": b"x",
                                "__MACOSX/a/._1.png": b"x", "README": b"about", "b/2.png": png})
    log = ReadLog()
    batch, rejects = read_source(str(root), IngestConfig(), log=log)
    assert len(batch) == 2 and rejects == []
    skipped = {s.source: s.reason for s in log.skipped}
    assert set(skipped) == {"a/GT-a.csv", "a/._1.png", "a/Thumbs.db", ".DS_Store", "__MACOSX", "README"}
    assert "CSV inside a class folder" in skipped["a/GT-a.csv"]


def test_two_paths_image_folder_and_labels_csv(tmp_path):
    from tasks.ingest import prepare_batch

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x.png").write_bytes(encoded(Image.fromarray(GRAY), "PNG"))
    (tmp_path / "elsewhere.csv").write_text("image;target\nx.png;7\n")
    candidate = prepare_batch((str(root), str(tmp_path / "elsewhere.csv")), IngestConfig(),
                              tmp_path / "batches")
    assert list(candidate.batch.labels) == ["7"]
    assert candidate.meta["decoded_as"].iloc[0].startswith("PNG L")


def test_class_folder_csvs_give_rois_scaled_to_a_resized_copy(tmp_path):
    folder = tmp_path / "Images" / "00003"
    folder.mkdir(parents=True)
    img = np.zeros((20, 20, 3), np.uint8)
    img[4:16, 6:14] = 200  # the sign; the CSV measured it on the 40x40 original
    (folder / "00000_00000.ppm").write_bytes(netpbm(b"P6", img, 255))
    (folder / "GT-00003.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                         "00000_00000.ppm;40;40;12;8;27;31;3\n")
    plain, _ = read_source(str(tmp_path / "Images"), IngestConfig())
    assert plain.x.shape[2:] == (20, 20) and list(plain.labels) == ["00003"]
    log = ReadLog()
    cropped, _ = read_source(str(tmp_path / "Images"), IngestConfig(crop_roi=True), log=log)
    assert cropped.x.shape[2:] == (12, 8) and (cropped.x == 200).all()
    assert any("ROIs from 1 class-folder CSV(s) (1 rows): 00003/GT-00003.csv" in n for n in log.notes)
    assert log.skipped == []  # the CSV was read, not skipped


def test_tiff_orientation_is_applied_once(tmp_path):
    x, _ = read_one(tmp_path, "o.tif", with_orientation(Image.fromarray(GRAY), "TIFF", 6))
    np.testing.assert_array_equal(x[0], np.rot90(GRAY, -1))  # Pillow turns TIFFs itself


def test_png_exif_after_the_pixels_is_found_before_decoding(tmp_path):
    import struct
    import zlib

    data = encoded(Image.fromarray(GRAY), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    at = data.rfind(b"IEND") - 4  # the eXIf chunk after IDAT, before IEND
    x, how = read_one(tmp_path, "late.png", data[:at] + chunk + data[at:])
    np.testing.assert_array_equal(x[0], np.rot90(GRAY, -1))
    assert "stretch" not in how
