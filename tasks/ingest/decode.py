"""Decode one image file faithfully through Pillow, with an explicit list of formats.

Two steps, so that limits are checked before any pixel is decoded: `probe` reads the
header (size, mode, orientation), `decode` turns the file into uint8 (H, W) or (H, W, 3)
at the size asked for, saying how (`decoded_as`): 16-bit is scaled, alpha is composited
over a background, palettes, LA and CMYK are converted, EXIF orientation is applied.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np

# never let Pillow probe other plugins: EPS runs Ghostscript, and every extra parser is attack
# surface. PPM covers PBM/PGM/PPM/PNM.
FORMATS = ("PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP", "GIF")
SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".pbm", ".pgm", ".ppm",
            ".pnm", ".tif", ".tiff", ".webp", ".gif"}
FORMAT_NAMES = "PNG, JPEG, BMP, PBM/PGM/PPM, TIFF, WebP, GIF"
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
Policy = Literal["stretch", "pad", "crop"]
# EXIF orientation -> the Pillow transpose that shows the image upright (as ImageOps.exif_transpose)
# (FLIP_LEFT_RIGHT 0, FLIP_TOP_BOTTOM 1, ROTATE_90 2, ROTATE_180 3, ROTATE_270 4, TRANSPOSE 5,
# TRANSVERSE 6)
TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


@dataclass(frozen=True)
class Header:
    """What the header says, before decoding: size as shown (EXIF applied), mode, colour."""

    format: str
    width: int
    height: int
    mode: str
    colour: bool
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Target:
    """What every image of a batch becomes: channels, [H, W], how to fit, what under alpha."""

    channels: int
    size: tuple[int, int]
    policy: Policy = "stretch"
    background: tuple[int, int, int] = (255, 255, 255)


class DecodeError(Exception):
    """This one file cannot be decoded; the message says why."""


def _open(fh: IO[bytes]):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(fh, formats=FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(f"cannot decode image: not a {FORMAT_NAMES} file") from None


def probe(fh: IO[bytes], max_pixels: int) -> Header:
    """The header of one image; a claim above `max_pixels` is refused before decoding."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit stands in
        try:
            img = _open(fh)
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError(f"image header claims {w}x{h} pixels "
                                  f"(> ingest.max_image_pixels {max_pixels})")
            if w == 0 or h == 0:
                raise DecodeError(f"image header claims {w}x{h}: no pixels")
            orientation = _orientation(img) if img.format != "PNG" or "exif" in img.info \
                else _late_png_orientation(fh)
            if orientation in SWAPS_SIDES and img.format != "TIFF":  # TIFF: Pillow turns it itself
                w, h = h, w
            return Header(img.format or "?", w, h, img.mode, _has_colour(img), orientation)
        except DecodeError:
            raise
        except Image.DecompressionBombError:
            raise DecodeError(f"image header claims more pixels than Pillow allows "
                              f"(> ingest.max_image_pixels {max_pixels})") from None
        except Exception as exc:  # noqa: BLE001 - hostile headers make Pillow raise almost anything
            raise DecodeError(f"cannot decode image: unreadable header ({type(exc).__name__})") from None


def _orientation(img, loaded: bool = False) -> int:
    """EXIF orientation 1..8 (1 when absent), read without decoding pixels unless `loaded`."""
    if img.format == "PNG" and "exif" not in img.info and not loaded:
        return 1  # an eXIf chunk after the pixels: found at decode time by exif_transpose
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block is not a corrupt image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _late_png_orientation(fh: IO[bytes], max_chunks: int = 10_000) -> int:
    """The orientation in a PNG's eXIf chunk when it follows the pixels (IDAT), found by
    walking the chunk headers (their data is skipped, nothing is decompressed)."""
    from PIL import Image

    fh.seek(8)
    for _ in range(max_chunks):
        head = fh.read(8)
        if len(head) < 8:
            return 1
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        if kind == b"IEND":
            return 1
        if kind == b"eXIf" and length <= 65536:
            exif = Image.Exif()
            try:
                exif.load(fh.read(length))
            except Exception:  # noqa: BLE001 - a corrupt EXIF block is not a corrupt image
                return 1
            value = exif.get(0x0112, 1)
            return value if isinstance(value, int) and 1 <= value <= 8 else 1
        fh.seek(length + 4, 1)  # the data and its CRC
    return 1


def _has_colour(img) -> bool:
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        triples = zip(palette[0::3], palette[1::3], palette[2::3], strict=False)
        return any(not r == g == b for r, g, b in triples)
    return img.mode not in GRAY_MODES


def decode(fh: IO[bytes], header: Header, target: Target,
           roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, str]:
    """uint8 (H, W) for 1 channel or (H, W, 3), at target.size, and how it was decoded."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = _open(fh)
            notes = [f"{img.format} {img.mode}"]
            if img.format == "JPEG" and roi is None:  # decode at 1/2, 1/4, 1/8 when that is enough
                img.draft("L" if target.channels == 1 else "RGB", _draft_size(header, target))
            img.load()  # the first frame or page only
            orientation = _orientation(img, loaded=True)  # now also from a PNG's eXIf chunk after the pixels
            if roi is not None:
                img = img.crop(roi)
                notes.append(f"roi {roi}")
            img, how = _to_8bit(img, target)
            notes += how
            if orientation != 1:
                img = img.transpose(TRANSPOSE[orientation])
                notes.append(f"exif orientation {orientation}")
            img, how = _fit(img, target)
            notes += how
            return np.asarray(img, dtype=np.uint8), ", ".join(notes)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - hostile files make Pillow raise almost anything
            raise DecodeError(f"cannot decode image: {type(exc).__name__}") from None


def _draft_size(header: Header, target: Target) -> tuple[int, int]:
    """The size to ask JPEG's draft mode for, in the file's own orientation."""
    h, w = target.size
    return (h, w) if header.orientation in SWAPS_SIDES else (w, h)


def _to_8bit(img, target: Target):
    """An 8-bit L or RGB image in the target's channels, and the notes of what was done."""
    from PIL import Image

    mode, notes = img.mode, []
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top, note = _deep_range(arr, mode)
        notes.append(note)
        img = Image.fromarray(np.round(np.clip(arr * (255.0 / top), 0, 255)).astype(np.uint8), "L")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if alpha else "RGB")
        notes.append("palette" + (" with transparency" if alpha else ""))
    elif mode == "CMYK":
        img = img.convert("RGB")
        notes.append("CMYK converted")
    elif mode not in ("L", "LA", "La", "RGB", "RGBA", "RGBa"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        img = _composite(img, target.background)
        notes.append(f"alpha over {target.background}")
    want = "L" if target.channels == 1 else "RGB"
    if img.mode != want:
        notes.append(f"{img.mode}->{want}")
        img = img.convert(want)
    return img, notes


def _deep_range(arr: np.ndarray, mode: str) -> tuple[float, str]:
    """The top of the range a 16-bit, 32-bit or float image is scaled from, and the note;
    values outside every range the mode can mean are refused, as in NPZ, never clipped."""
    if not np.isfinite(arr).all():
        raise DecodeError("cannot decode image: NaN or inf pixel values")
    lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
    if mode == "F":
        if lo < 0 or hi > 255:
            raise DecodeError(f"cannot decode image: float pixel values outside 0..255 "
                              f"(min {lo:g}, max {hi:g})")
        top = 1.0 if hi <= 1.0 else 255.0
        return top, f"float scaled from 0..{top:g}"
    if lo < 0 or hi > 65535:  # I;16*, 16-bit PGM/PPM (Pillow scales maxval to 65535), int32 TIFF
        raise DecodeError(f"cannot decode image: integer pixel values outside 0..65535 "
                          f"(min {lo:g}, max {hi:g})")
    return 65535.0, "16-bit scaled"


def luma(rgb: tuple[int, int, int]) -> int:
    """The gray level of a colour (ITU-R 601, as Pillow's L)."""
    return round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _composite(img, background: tuple[int, int, int]):
    """Alpha composited over the background colour; the result has no alpha channel."""
    from PIL import Image

    rgba = img.convert("RGBA" if img.mode.startswith("RGB") else "LA")
    gray = rgba.mode == "LA"
    under = Image.new(rgba.mode, rgba.size, (luma(background), 255) if gray else (*background, 255))
    return Image.alpha_composite(under.convert("RGBA"), rgba.convert("RGBA")).convert(
        "L" if gray else "RGB")


def _fit(img, target: Target):
    """Resize to target.size by the policy: stretch, pad (letterbox) or crop (centre)."""
    from PIL import Image, ImageOps

    h, w = target.size
    if img.size == (w, h):
        return img, []
    note = f"{img.size[0]}x{img.size[1]}->{w}x{h} {target.policy}"
    resample = Image.Resampling.BILINEAR
    if target.policy == "pad":
        fill = target.background if img.mode == "RGB" else luma(target.background)
        return ImageOps.pad(img, (w, h), resample, color=fill), [note]
    if target.policy == "crop":
        return ImageOps.fit(img, (w, h), resample), [note]
    return img.resize((w, h), resample), [note]


def fit_array(x: np.ndarray, target: Target) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, C, *target.size), each image fitted by the target's policy."""
    from PIL import Image

    out = np.empty((len(x), x.shape[1], *target.size), np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        arr = np.asarray(_fit(pil, target)[0])
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out
