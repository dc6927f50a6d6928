"""Compress: variants of the teacher (pruned, distilled, int8), measured, one selected by budget.

The variants come from a plain dict of builders; each returns Variant objects. int8 copies
of the named variants follow. Every variant is exported to ONNX and measured there, the
runtime it is served from.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import CompressConfig, EvaluateConfig, SelectConfig
from nets import build_model
from nets.io import card_options
from tasks.adapt import settings_augment
from tasks.augment import PRESETS, Augment
from tasks.train import FitSettings, LossFn, cross_entropy_loss, fit, normalize

log = logging.getLogger("evergreen.compress")
Split = tuple[np.ndarray, np.ndarray]


class NotApplicable(Exception):
    """This teacher has no variant of this kind (pruning a network that is not a cnn): the
    variant is skipped with this reason. Any other error is a bug, and is raised."""


@dataclass
class Variant:
    """A compressed (or not) model; int8 ones are PT2E graphs, saved and served as ONNX only."""

    name: str
    model: nn.Module
    card: dict
    history: list[dict] = field(default_factory=list)
    int8: bool = False

    @property
    def method(self) -> str:
        return self.card.get("compression", {}).get("method", "none")


@dataclass
class Inputs:
    """What every variant builder may use."""

    teacher: nn.Module
    card: dict
    train: Split
    val: Split
    checkpoints: Path | None = None  # folder for per-variant epoch checkpoints
    checkpoint_key: str = ""

    def checkpoint(self, name: str) -> Path | None:
        return self.checkpoints / f"compress-{name}.pt" if self.checkpoints else None


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """Hinton et al. (2015): alpha * T^2 * KL(soft teacher || soft student) + (1-alpha) * CE."""
    teacher.eval()

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = F.softmax(teacher(x) / temperature, dim=1)
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft_targets,
                        reduction="batchmean") * temperature**2
        return alpha * soft + (1 - alpha) * F.cross_entropy(logits, y)

    return loss


def teacher_augment(cfg: CompressConfig, teacher_card: dict) -> Augment | None:
    """Students and fine-tunes train on the warps their teacher trained on (its card's record;
    the characters preset for a card from before auto defaults), or none with augment off."""
    if not cfg.augment:
        return None
    recorded = teacher_card.get("auto", {}).get("augment")
    return settings_augment(recorded) if recorded else PRESETS["characters"]


def student_epochs(cfg: CompressConfig, teacher_card: dict) -> int:
    """compress.epochs, or for auto the epochs the teacher's sample budget asked for, at least
    the teacher's and at most 1.5x them. A student on a large set sees the teacher's samples
    (GTSRB: 15 epochs of 27k images); where max_epochs cut the teacher short, it gets 1.5x (the
    digits: 40 of 318 asked; 40 left the distilled seed_cnn one validation image outside
    max_accuracy_drop, 60 kept it inside). A card without the record (epochs set): 1.5x."""
    if cfg.epochs != "auto":
        return int(cfg.epochs)
    auto = teacher_card.get("auto", {})
    teacher = int(auto.get("epochs", 40))
    return min(math.ceil(1.5 * teacher), max(teacher, int(auto.get("budget_epochs", 2 * teacher))))


def teacher_precision(teacher_card: dict) -> str:
    """Students and fine-tunes run the teacher's forward pass every step: its precision."""
    return teacher_card.get("auto", {}).get("precision", "fp32")


def student_settings(cfg: CompressConfig, teacher_card: dict) -> FitSettings:
    epochs = student_epochs(cfg, teacher_card)
    return FitSettings(epochs, cfg.batch_size, cfg.lr, "cosine", l2=cfg.l2, seed=cfg.seed,
                       augment=teacher_augment(cfg, teacher_card), patience=epochs,
                       precision=teacher_precision(teacher_card))


def train_student(teacher: nn.Module, teacher_card: dict, train: Split, val: Split,
                  cfg: CompressConfig, distilled: bool = True, checkpoint: Path | None = None,
                  checkpoint_key: str = ""):
    """The student architecture, from the teacher's soft targets or (control) the labels only.

    Both use the same seed, epochs and optimizer, so the difference is the distillation.
    Returns (model, card, history).
    """
    in_shape, classes = tuple(teacher_card["in_shape"]), teacher_card["classes"]
    arch, options = student_arch(cfg.student, teacher_card)
    options["dropout"] = cfg.dropout
    torch.manual_seed(cfg.seed)
    student = build_model(arch, in_shape, len(classes), **options)
    norm = (teacher_card["mean"], teacher_card["std"])
    loss = distillation_loss(teacher, cfg.temperature, cfg.alpha) if distilled else cross_entropy_loss
    student, history = fit(student, train, val, norm, student_settings(cfg, teacher_card),
                           name="compress",
                           loss_fn=loss, checkpoint=checkpoint, checkpoint_key=checkpoint_key)
    method = ({"method": "distillation", "teacher_arch": teacher_card["arch"],
               "temperature": cfg.temperature, "alpha": cfg.alpha} if distilled
              else {"method": "student_without_distillation", "role": "control"})
    inherited = {k: v for k, v in teacher_card.items() if k != "training"}  # not how it trained
    card = {**inherited, "arch": arch, "options": options,
            "compression": {**method, "student": cfg.student}}
    return student, card, history


SEED_CNN_MAX_SIDE = 16  # above it, the seed network's Flatten->Dense outgrows the teacher


def student_arch(choice: str, teacher_card: dict) -> tuple[str, dict]:
    """(architecture, options) of the student: `choice`, or for auto the seed's network on
    inputs up to 16 px and, above them, the teacher's architecture at 3/8 of its width (about
    a seventh of its weights and compute: half width measured 0.26 of the size and 2.5x the
    speed on 28x28, just outside the default budget), so it is never larger than its teacher."""
    if choice != "auto":
        return choice, {}
    if max(teacher_card["in_shape"][1:]) <= SEED_CNN_MAX_SIDE or teacher_card["arch"] == "seed_cnn":
        return "seed_cnn", {}
    options = dict(teacher_card.get("options", {}))
    if teacher_card["arch"] == "cnn":
        options["channels"] = [max(4, round(c * 3 / 8)) for c in options.get("channels", [32, 64, 128])]
    elif teacher_card["arch"] == "vit":
        options["dim"] = max(8, round(options.get("dim", 64) * 3 / 8 / 4) * 4)
        options["heads"] = max(1, min(options.get("heads", 4), options["dim"] // 8))
    options.pop("dropout", None)
    return teacher_card["arch"], options


def distill(teacher: nn.Module, teacher_card: dict, train: Split, val: Split, cfg: CompressConfig,
            checkpoint: Path | None = None, checkpoint_key: str = ""):
    """Train the student architecture on the teacher's softened outputs; returns (model, card, history)."""
    return train_student(teacher, teacher_card, train, val, cfg, True, checkpoint, checkpoint_key)


def conv_channels(model: nn.Module) -> list[int]:
    """Output channels of every Conv2d, in order."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def pruned_widths(widths: list[int], ratio: float, round_to: int) -> list[int]:
    """Each width less `ratio` of it, to the nearest multiple of round_to; where that is none,
    to the nearest channel (at least 1)."""
    def keep(width: int) -> int:
        left = width * (1 - ratio)
        rounded = round(left / round_to) * round_to
        return rounded if rounded >= round_to else max(1, round(left))

    return [keep(w) for w in widths]


def weight_count(card: dict, channels: list[int]) -> int:
    """Floats in the state of the card's cnn with these block widths (what its export holds)."""
    options = {**card_options(card), "channels": channels}
    model = build_model("cnn", tuple(card["in_shape"]), len(card["classes"]), **options)
    return sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point)


def auto_prune_ratio(card: dict, max_size_ratio: float | None, round_to: int) -> tuple[float, str]:
    """(ratio, why): the smallest share of channels (in steps of 0.01) whose pruned teacher keeps
    at most max_size_ratio of its weights; the stem's inputs and the head's outputs stay, so
    halving every width leaves a little over a quarter. 0.5 without a size budget or a cnn."""
    if max_size_ratio is None or card["arch"] != "cnn":
        return 0.5, "no size budget" if max_size_ratio is None else f"{card['arch']} is not pruned"
    widths = card_options(card)["channels"]
    full = weight_count(card, widths)
    for step in range(1, 96):
        ratio = step / 100
        channels = pruned_widths(widths, ratio, round_to)
        share = weight_count(card, channels) / full
        if share <= max_size_ratio:
            return ratio, (f"the mildest ratio whose widths {channels} keep {share:.2f} of the "
                           f"weights <= compress.select.max_size_ratio {max_size_ratio}")
    return 0.95, f"no ratio up to 0.95 keeps {max_size_ratio} of the weights"


def resolve_prune(cfg: CompressConfig, card: dict) -> tuple[CompressConfig, dict[float, str]]:
    """cfg with each auto pruning ratio decided for this teacher, and why each ratio was taken."""
    ratios, why = [], {}
    for choice in cfg.prune.ratios:
        ratio, reason = ((choice, "compress.prune.ratios") if choice != "auto" else
                         auto_prune_ratio(card, cfg.select.max_size_ratio, cfg.prune.round_to))
        if ratio not in why:
            ratios.append(ratio)
            why[ratio] = reason
    return cfg.model_copy(update={"prune": cfg.prune.model_copy(update={"ratios": ratios})}), why


def prune_channels(model: nn.Module, card: dict, ratio: float, round_to: int = 1
                   ) -> tuple[nn.Module, dict]:
    """Remove `ratio` of every conv layer's channels (L2 magnitude, dependency-aware), keeping
    the widths `pruned_widths` gives.

    Torch-Pruning removes whole filters together with what depends on them (BatchNorm,
    the next conv's inputs), so the result is a smaller dense `cnn`; it is rebuilt from
    its card's channel list, which proves the card describes it. Returns (model, card).
    """
    import torch_pruning as tp

    if card["arch"] != "cnn":
        raise NotApplicable(f"pruning supports the cnn teacher, not {card['arch']!r}")
    pruned = copy.deepcopy(model).eval()
    example = torch.zeros(1, *card["in_shape"])
    head = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]  # classes stay
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    target = pruned_widths([m.out_channels for m in convs], ratio, round_to)
    # Torch-Pruning keeps int(width * (1 - layer ratio)) channels: half a channel above the target
    per_layer = {m: 1 - (t + 0.5) / m.out_channels for m, t in zip(convs, target, strict=True)}
    pruner = tp.pruner.MetaPruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, pruning_ratio_dict=per_layer,
                                  ignored_layers=[head])
    pruner.step()
    widths = conv_channels(pruned)
    if widths != target:
        raise RuntimeError(f"pruning left widths {widths}, expected {target}")
    channels = widths[::2]  # a cnn block is two convs of equal width
    if widths[1::2] != channels:
        raise RuntimeError(f"pruning left unequal widths within a block: {widths}")
    options = {**card_options(card), "channels": channels}
    rebuilt = build_model("cnn", tuple(card["in_shape"]), len(card["classes"]), **options)
    rebuilt.load_state_dict(pruned.state_dict())
    pruned_card = {**card, "options": options, "compression": {
        "method": "pruning", "tool": "torch-pruning", "importance": "L2 magnitude",
        "ratio": ratio, "round_to": round_to, "channels_before": conv_channels(model)[::2],
        "channels_after": channels}}
    return rebuilt.eval(), pruned_card


def calibration_batch(train: Split, card: dict, n: int, seed: int) -> torch.Tensor:
    """n normalized train samples, a seeded random choice."""
    order = np.random.default_rng(seed).permutation(len(train[0]))[:n]
    return normalize(torch.from_numpy(train[0][order]), card["mean"], card["std"])


class DropMessage(logging.Filter):
    """A logger filter that drops the records whose message matches `pattern`."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


# what importing torchao logs on every run, about what this pipeline never uses (int8 runs on
# the CPU through the X86 quantizer): CUDA kernels (mxfp8; CUTLASS for sm90a) that a CPU
# torch cannot load, Triton kernels, and torch's deprecation of how torchao registers an Enum
TORCHAO_IMPORT_NOISE = {
    "torchao": DropMessage(r"Failed to load \S*torchao/_C_(mxfp8|cutlass_90a)\S*\.so: "),
    "torchao.kernel.intmm": DropMessage(r"Warning: Detected no triton, "),
    "torch.utils._pytree": DropMessage(r"<enum '\w+'> is an Enum subclass and is now natively "
                                       r"supported by torch\.compile"),
}


def quiet_torchao_import() -> None:
    """Silence torchao's expected import-time warnings; any other warning still shows."""
    for name, drop in TORCHAO_IMPORT_NOISE.items():
        logging.getLogger(name).addFilter(drop)  # addFilter skips a filter already there


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_vnni") or caps.get("avx_vnni"))


def resolve_reduce_range(choice: str | bool) -> tuple[bool, str]:
    """(activations in 7 bits?, why): compress.quantize.reduce_range, or for auto, 7 bits on a
    CPU without VNNI. There onnxruntime multiplies uint8 activations by int8 weights with
    VPMADDUBSW, whose 16-bit pair sums saturate past 127 x 127 x 2; torchao's X86 quantizer
    gives the same advice."""
    if choice != "auto":
        return bool(choice), "compress.quantize.reduce_range"
    if has_vnni():
        return False, "VNNI on this CPU: full 8-bit activations"
    return True, "no VNNI on this CPU: 7-bit activations, else onnxruntime's u8s8 kernels saturate"


def quantize_int8(model: nn.Module, calibration: torch.Tensor, reduce_range: bool = False
                  ) -> nn.Module:
    """Static int8 with the PT2E flow (torchao): per-channel int8 weights, uint8 activations
    (0..127 with `reduce_range`).

    Returns the converted graph (quantize/dequantize around float ops); onnxruntime fuses
    those into int8 kernels once exported.
    """
    quiet_torchao_import()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    batch = torch.export.Dim("batch")
    captured = torch.export.export(model.eval(), (calibration[:2],),
                                   dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for chunk in calibration.split(64):
            prepared(chunk)
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)  # .eval() as on any model (dropout: identity)
    converted.eval()  # the patched method returns None, not the model
    return converted


def teacher_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    return [Variant("teacher", inputs.teacher, {**inputs.card, "compression": {"method": "none"}})]


def pruned_name(ratio: float) -> str:
    return f"pruned_{round(ratio * 100)}"


def pruned_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    """One pruned teacher per ratio (auto decided for this teacher), fine-tuned with
    distillation from the unpruned teacher."""
    out = []
    cfg, ratio_why = resolve_prune(cfg, inputs.card)
    for ratio in cfg.prune.ratios:
        name = pruned_name(ratio)
        model, card = prune_channels(inputs.teacher, inputs.card, ratio, cfg.prune.round_to)
        card["compression"]["ratio_why"] = ratio_why[ratio]
        history = []
        if cfg.prune.epochs:
            settings = FitSettings(cfg.prune.epochs, cfg.batch_size, cfg.prune.lr, "cosine",
                                   l2=cfg.l2, seed=cfg.seed, patience=cfg.prune.epochs,
                                   augment=teacher_augment(cfg, inputs.card),
                                   precision=teacher_precision(inputs.card))
            loss = distillation_loss(inputs.teacher, cfg.temperature, cfg.alpha)
            model, history = fit(model, inputs.train, inputs.val, (card["mean"], card["std"]),
                                 settings, name=name, loss_fn=loss,
                                 checkpoint=inputs.checkpoint(name),
                                 checkpoint_key=inputs.checkpoint_key)
            card["compression"]["finetune_epochs"] = cfg.prune.epochs
        out.append(Variant(name, model, card, history))
    return out


def distilled_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    model, card, history = train_student(inputs.teacher, inputs.card, inputs.train, inputs.val, cfg,
                                         True, inputs.checkpoint("distilled"), inputs.checkpoint_key)
    return [Variant("distilled", model, card, history)]


def control_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    if not cfg.control:
        return []
    model, card, history = train_student(inputs.teacher, inputs.card, inputs.train, inputs.val, cfg,
                                         False, inputs.checkpoint("control"), inputs.checkpoint_key)
    return [Variant("control", model, card, history)]


VARIANTS = {"teacher": teacher_variants, "pruned": pruned_variants,
            "distilled": distilled_variants, "control": control_variants}


def int8_variant(source: Variant, calibration: torch.Tensor,
                 reduce_range: tuple[bool, str] = (False, "compress.quantize.reduce_range")
                 ) -> Variant:
    reduced, why = reduce_range
    card = {**source.card, "format": "onnx", "compression": {
        "method": f"{source.method}+int8" if source.method != "none" else "int8",
        "source": source.name, "source_compression": source.card.get("compression", {}),
        "quantization": {"tool": "torchao pt2e", "quantizer": "X86InductorQuantizer",
                         "weights": "int8 per channel",
                         "activations": f"uint8 per tensor, 0..{127 if reduced else 255}",
                         "activations_why": why, "calibration_samples": len(calibration)}}}
    model = quantize_int8(source.model, calibration, reduced)
    return Variant(f"{source.name}_int8", model, card, int8=True)


STUDENT_KINDS = ("distilled", "control")


def planned_by_kind(kinds: tuple[str, ...], cfg: CompressConfig) -> dict[str, list[str]]:
    """The variants these kinds would build with this config (int8 copies aside), per kind."""
    names = {"teacher": ["teacher"], "pruned": [pruned_name(r) for r in cfg.prune.ratios],
             "distilled": ["distilled"], "control": ["control"] if cfg.control else []}
    return {kind: names[kind] for kind in kinds}


def planned_names(kinds: tuple[str, ...], cfg: CompressConfig) -> set[str]:
    """The variants these kinds would build with this config (int8 copies aside)."""
    return {name for names in planned_by_kind(kinds, cfg).values() for name in names}


def int8_sources(kinds: tuple[str, ...], cfg: CompressConfig) -> list[str]:
    """The planned variants compress.quantize.variants names, by name or by kind."""
    wanted = set(cfg.quantize.variants)
    return [name for kind, names in planned_by_kind(kinds, cfg).items() for name in names
            if kind in wanted or name in wanted]


def build_rounds(cfg: CompressConfig) -> list[tuple[tuple[str, ...], CompressConfig]]:
    """(kinds, the config that builds just them), mildest first: the teacher with the smallest
    pruning ratio, each larger ratio, then the students. A pruned fine-tune costs a few epochs,
    a student about half the teacher's training (each of its epochs runs the teacher's forward
    pass), so with compress.build lazy the rounds stop at the first that fits the budget."""
    def only(ratio: float) -> CompressConfig:
        return cfg.model_copy(update={"prune": cfg.prune.model_copy(update={"ratios": [ratio]})})

    ratios = sorted(cfg.prune.ratios)
    if not ratios:
        return [(("teacher",), cfg), (STUDENT_KINDS, cfg)]
    return ([(("teacher", "pruned"), only(ratios[0]))]
            + [(("pruned",), only(r)) for r in ratios[1:]] + [(STUDENT_KINDS, cfg)])


def build_variants(inputs: Inputs, cfg: CompressConfig, kinds: tuple[str, ...] = tuple(VARIANTS)
                   ) -> tuple[dict[str, Variant], dict[str, str]]:
    """The variants of these kinds the config asks for (with the int8 copies of those
    compress.quantize.variants names), by name; and why any could not be built."""
    variants, skipped = {}, {}
    for kind in kinds:
        builder = VARIANTS[kind]
        try:
            variants.update((v.name, v) for v in builder(inputs, cfg))
        except NotApplicable as exc:
            skipped[kind] = str(exc)
            log.warning("compress: no %s variant: %s", kind, exc)
    calibration = calibration_batch(inputs.train, inputs.card, cfg.quantize.calibration_samples,
                                    cfg.seed)
    reduce_range = resolve_reduce_range(cfg.quantize.reduce_range)
    for name in int8_sources(kinds, cfg):
        if name not in variants:  # planned in this round, yet failed
            skipped[f"{name}_int8"] = f"no variant {name!r} to quantize"
            continue
        try:
            v = int8_variant(variants[name], calibration, reduce_range)
            variants[v.name] = v
        except Exception as exc:  # export/quantizer support differs per architecture
            skipped[f"{name}_int8"] = f"int8 failed: {type(exc).__name__}: {exc}"
            log.warning("compress: no int8 of %s: %s", name, exc)
    return variants, skipped


def save_variant(variant: Variant, out_dir: Path, check: torch.Tensor) -> dict:
    """Write the ONNX export, card and (fp32) safetensors; check fp32 parity. Returns export info."""
    from nets.io import CARD, ONNX, load_onnx, save_model
    from tasks.export import check_parity, export_onnx, parity

    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(variant.model, tuple(variant.card["in_shape"]), out_dir / ONNX)
    served = load_onnx(out_dir)
    if variant.int8:  # no fp32 weights to keep; compare with the PT2E graph it came from
        from evergreen.workspace import write_json

        write_json(out_dir / CARD, variant.card)
        return {"onnx_max_abs_diff": parity(variant.model, served, check)}
    save_model(variant.model, variant.card, out_dir)
    return {"onnx_max_abs_diff": check_parity(variant.model, served, check, out_dir / ONNX)}


def measure_variants(variants: dict[str, Variant], out: Path, val: Split, test: Split,
                     cfg: SelectConfig) -> dict[str, dict]:
    """Per variant: test metrics, val accuracy (what selection uses), size, and latency of the
    ONNX export (the runtime it is served from) measured side by side with the others."""
    from nets.io import ONNX, load_onnx
    from tasks.evaluate import classification_metrics, measure_latencies, predict_proba

    speed_cfg = EvaluateConfig(latency_runs=cfg.latency_runs, throughput_batch=cfg.throughput_batch)
    in_shape = tuple(next(iter(variants.values())).card["in_shape"])
    served = {name: load_onnx(out / name) for name in variants}
    speed = measure_latencies(served, in_shape, speed_cfg)
    eager = measure_latencies({n: v.model for n, v in variants.items() if not v.int8}, in_shape,
                              speed_cfg)
    rows = {}
    for name, variant in variants.items():
        card = variant.card
        metrics = classification_metrics(test[1], predict_proba(served[name], card, test[0]),
                                         card["classes"])
        val_acc = float((predict_proba(served[name], card, val[0]).argmax(1) == val[1]).mean())
        rows[name] = {"name": name, "method": variant.method, "accuracy": metrics["accuracy"],
                      "f1_macro": metrics["f1_macro"], **speed[name],
                      "size_bytes": (out / name / ONNX).stat().st_size,
                      "params": None if variant.int8 else sum(p.numel() for p in variant.model.parameters()),
                      "val_accuracy": val_acc, "runtime": "onnxruntime", "int8": variant.int8,
                      "torch_latency_ms_p50": eager.get(name, {}).get("latency_ms_p50")}
    return rows


def budget_failures(row: dict, teacher: dict, cfg: SelectConfig) -> list[str]:
    """Why a variant is outside the budget (empty when it fits)."""
    why = []
    drop = round(teacher["val_accuracy"] - row["val_accuracy"], 6)
    if drop > cfg.max_accuracy_drop:
        why.append(f"val accuracy {drop:.4f} below the teacher's (max_accuracy_drop "
                   f"{cfg.max_accuracy_drop})")
    share = row["size_bytes"] / teacher["size_bytes"]
    if cfg.max_size_ratio is not None and share > cfg.max_size_ratio:
        why.append(f"size {row['size_bytes'] / 1024:.1f} KB is {share:.2f} of the teacher's "
                   f"> max_size_ratio {cfg.max_size_ratio}")
    if cfg.max_latency_ms is not None and row["latency_ms_p95"] > cfg.max_latency_ms:
        why.append(f"latency p95 {row['latency_ms_p95']:.3f} ms > max_latency_ms {cfg.max_latency_ms}")
    if cfg.max_size_kb is not None and row["size_bytes"] / 1024 > cfg.max_size_kb:
        why.append(f"size {row['size_bytes'] / 1024:.1f} KB > max_size_kb {cfg.max_size_kb}")
    speedup = teacher["latency_ms_p50"] / row["latency_ms_p50"]
    if speedup < cfg.min_speedup:
        why.append(f"{speedup:.2f}x faster than the teacher (p50) < min_speedup {cfg.min_speedup}")
    return why


OBJECTIVES = {
    "accuracy": lambda r: (-r["val_accuracy"], r["latency_ms_p50"], r["size_bytes"]),
    "latency": lambda r: (r["latency_ms_p50"], -r["val_accuracy"]),
    "size": lambda r: (r["size_bytes"], -r["val_accuracy"]),
}


def select_variant(rows: list[dict], cfg: SelectConfig) -> tuple[str | None, str]:
    """The best variant within budget by the objective, and a sentence saying why.

    Marks every row with `fits` and `outside_budget` (the reasons it does not fit).
    """
    teacher = next(r for r in rows if r["name"] == "teacher")
    for row in rows:
        row["outside_budget"] = budget_failures(row, teacher, cfg)
        row["fits"] = not row["outside_budget"]
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        detail = "; ".join(f"{r['name']}: {', '.join(r['outside_budget'])}" for r in rows
                           if r["name"] != "teacher")
        if cfg.fallback == "teacher":  # a good model is not thrown away for want of a smaller one
            return "teacher", (f"no variant fits the compression budget ({detail}); the teacher "
                               "is the candidate (compress.select.fallback: teacher)")
        return None, f"no variant fits the compression budget ({detail})"
    best = min(fitting, key=OBJECTIVES[cfg.objective])
    return best["name"], (f"{best['name']}: best {cfg.objective} of {len(fitting)} variants "
                          f"within budget ({', '.join(r['name'] for r in fitting)})")


def building_stops(cfg: CompressConfig, rows: list[dict], candidate: str) -> str | None:
    """Why the later build rounds are skipped (None: go on). With compress.build lazy and the
    accuracy objective, building stops once a compressed variant fits the budget: a later
    round is harsher (more pruning, or a student a seventh of the teacher) and costs more
    training. Everything is built for the latency or size objective, for a student that is
    the candidate, and when distillation is measured against its control."""
    if cfg.build == "all" or cfg.select.objective != "accuracy" or cfg.control \
            or candidate == "student":
        return None
    fitting = [r["name"] for r in rows if r.get("fits") and r["name"] != "teacher"]
    if not fitting:
        return None
    return (f"{', '.join(fitting)} already fit the budget, so the harsher variants were not built "
            "(compress.build: lazy; set it to all to build every variant)")


def distillation_gain(rows: list[dict]) -> dict | None:
    """Test accuracy of the distilled student minus its no-distillation control."""
    by_name = {r["name"]: r for r in rows}
    if "distilled" not in by_name or "control" not in by_name:
        return None
    d, c = by_name["distilled"]["accuracy"], by_name["control"]["accuracy"]
    return {"distilled": d, "control": c, "gain": d - c}
