"""Save and load models as safetensors weights plus a JSON card; nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes, write_json

if TYPE_CHECKING:  # torch loads where a model is saved or built, not for cards and hashes
    import torch

WEIGHTS, CARD, ONNX = "model.safetensors", "model.json", "model.onnx"
PICKLED = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")  # never loaded: unpickling runs code


def save_model(model: torch.nn.Module, card: dict[str, Any], out_dir: Path) -> Path:
    """Write weights and card (arch, options, in_shape, classes, mean, std) to out_dir."""
    from safetensors.torch import save

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS, save(state))
    write_json(out_dir / CARD, card)
    return out_dir / WEIGHTS


def read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CARD
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: missing model card; is {model_dir} a trained model?") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON: {exc}") from None
    for key in ("arch", "in_shape", "classes", "mean", "std"):
        if key not in card:
            raise BadInputError(f"{path}: missing field {key!r}")
    return card


def model_file(model_dir: Path) -> Path:
    """The file a model is served from and identified by: weights, or the ONNX-only export."""
    return model_dir / (WEIGHTS if (model_dir / WEIGHTS).exists() else ONNX)


def load_onnx(model_dir: Path) -> torch.nn.Module:
    """The exported model.onnx behind an nn.Module (onnxruntime, CPU)."""
    from nets.runtime import OnnxModel

    path = model_dir / ONNX
    if not path.exists():
        raise BadInputError(f"{path}: missing ONNX export")
    try:
        return OnnxModel(path).eval()
    except Exception as exc:  # onnxruntime raises its own error types for bad graphs
        raise BadInputError(f"{path}: not a loadable ONNX model: {exc}") from None


def load_model(model_dir: Path, prefer_onnx: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network from its card and load safetensors weights (eval mode).

    An ONNX-only model (card format "onnx", e.g. int8) runs in onnxruntime; so does any
    model with an export when `prefer_onnx` (how `evergreen predict` serves).
    """
    from nets import build_model

    card = read_card(model_dir)
    if card.get("format") == "onnx" or (prefer_onnx and (model_dir / ONNX).exists()):
        return load_onnx(model_dir), card
    model = build_model(card["arch"], tuple(card["in_shape"]), len(card["classes"]),
                        **card_options(card))
    return load_weights(model, model_dir), card


def card_options(card: dict[str, Any]) -> dict[str, Any]:
    """The builder options a card records; a cnn card from before `stem_stride` existed was
    built with stride 1 (the auto default would rebuild a different network)."""
    options = dict(card.get("options", {}))
    if card["arch"] == "cnn":
        options.setdefault("stem_stride", 1)
    return options


def load_weights(model: torch.nn.Module, model_dir: Path) -> torch.nn.Module:
    """model_dir's safetensors weights into `model` (eval mode); a pickle is refused by name."""
    from safetensors.torch import load_file

    weights = model_dir / WEIGHTS
    try:
        model.load_state_dict(load_file(str(weights)))
    except FileNotFoundError:
        raise BadInputError(f"{weights}: missing weights file{pickled_hint(model_dir)}") from None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise BadInputError(f"{weights}: not loadable safetensors weights{pickle_note(weights)}: "
                            f"{exc}") from None
    return model.eval()


def pickle_note(path: Path) -> str:
    """Say so when a weights file is really a pickle (or torch.save zip): it is refused, not run."""
    with path.open("rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        return " (it is a pickle / torch.save file; refused, as unpickling can run code)"
    return ""


def pickled_hint(model_dir: Path) -> str:
    found = sorted(p.name for p in model_dir.iterdir() if p.suffix.lower() in PICKLED)
    if not found:
        return ""
    return (f"; {', '.join(found)} found there but refused: pickled models are never loaded "
            f"(unpickling can run code); save weights as {WEIGHTS}")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
