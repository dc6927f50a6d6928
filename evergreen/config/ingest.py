"""The ingest section: where data comes from and how images are read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evergreen.config.section import Section


class IngestConfig(Section):
    """Where data comes from when the dataset is empty, and how images are read."""

    source: str = Field("digits", description="'digits' or a path (folder, IDX, NPZ, CSV, archive)")
    channels: Literal["auto", "gray", "rgb"] = Field(
        "auto", description="auto: RGB when any image has colour (gray ones expanded), else gray; "
        "a dataset's later batches follow its first")
    image_size: Literal["auto"] | list[int] = Field(
        "auto", description="[H, W], or auto: the images' own size when they share one, else the "
        "median height and width (square when close), at most max_auto_side; later batches "
        "follow the dataset")
    resize: Literal["stretch", "pad", "crop"] = Field(
        "stretch", description="how an image of another shape fits image_size: stretch, pad "
        "(letterbox with alpha_background) or crop (centre)")
    max_auto_side: int = Field(128, ge=4, le=4096,
                               description="image_size auto never picks a side above this")
    alpha_background: list[int] = Field(
        default_factory=lambda: [255, 255, 255], min_length=3, max_length=3,
        description="RGB colour transparent pixels are composited over (and pad's fill)")
    labels_csv: str | None = Field(
        None, description="CSV mapping file name to label for a folder of images (found beside "
        "the images or one folder up when null)")
    crop_roi: bool = Field(False, description="crop to the labels CSV's ROI columns (X1, Y1, X2, Y2, "
                           "inclusive, as GTSRB's Roi.X1 ...)")
    on_bad_sample: Literal["reject", "drop"] = Field(
        "reject", description="a bad sample rejects the whole batch, or is dropped and reported")
    csv_label_column: str = Field("label", min_length=1, description="CSV column holding the label")
    max_image_pixels: int = Field(16_777_216, ge=1, description="larger headers are refused")
    max_batch_pixels: int = Field(
        500_000_000, ge=1, description="pixel values (N x C x H x W, bytes as uint8) a batch holds "
        "in memory, checked from the headers before decoding: a file (IDX, NPZ, CSV) past it is "
        "refused (split it); an image folder past it is decoded into shards on disk as it is "
        "read, if the disk has room")
    max_csv_line_bytes: int = Field(4_194_304, ge=64, description="a longer CSV line is refused")
    read_timeout_s: float = Field(300.0, ge=0.0, le=86_400.0,
                                  description="longest read of one file; 0 = none")
    max_archive_bytes: int = Field(2_000_000_000, ge=1, description="uncompressed archive cap")
    max_archive_members: int = Field(1_000_000, ge=1)
    shard_mb: int = Field(128, ge=1, le=4096, description="a landed batch's pixels go to .npy "
                          "shards of at most this many MB (DVC tracks shards, not images)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Workspaces from before `channels`: `grayscale: true|false|null`, `image_size: null`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "grayscale" in data:
            legacy = data.pop("grayscale")
            if legacy is not None and not isinstance(legacy, bool):
                raise ValueError(f"grayscale (deprecated; use channels): expected true, false or "
                                 f"null, got {legacy!r}")
            if legacy is not None:
                data.setdefault("channels", "gray" if legacy else "rgb")
        if "image_size" in data and data["image_size"] is None:
            data["image_size"] = "auto"
        return data

    @field_validator("image_size")
    @classmethod
    def _size_pair(cls, value: Any) -> Any:
        if isinstance(value, list) and (len(value) != 2 or not all(1 <= v <= 65536 for v in value)):
            raise ValueError(f"expected auto or [H, W] with sides in 1..65536, got {value}")
        return value

    @field_validator("alpha_background")
    @classmethod
    def _colour(cls, value: list[int]) -> list[int]:
        if not all(0 <= v <= 255 for v in value):
            raise ValueError(f"expected [R, G, B] in 0..255, got {value}")
        return value
