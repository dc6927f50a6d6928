"""The variant builders (a plain dict by kind), the build rounds from the mildest variant to the
students, and the int8 copies compress.quantize.variants asks for."""

from __future__ import annotations

from evergreen.config import CompressConfig
from tasks.compress.prune import prune_channels, resolve_prune
from tasks.compress.quantize import calibration_batch, int8_variant, resolve_reduce_range
from tasks.compress.students import distillation_loss, teacher_augment, teacher_precision, train_student
from tasks.compress.variant import Inputs, NotApplicable, Variant, log
from tasks.train import FitSettings, fit


def teacher_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    return [Variant("teacher", inputs.teacher, {**inputs.card, "compression": {"method": "none"}})]


def pruned_name(ratio: float) -> str:
    return f"pruned_{round(ratio * 100)}"


def pruned_variants(inputs: Inputs, cfg: CompressConfig) -> list[Variant]:
    """One pruned teacher per ratio (auto decided for this teacher), fine-tuned with
    distillation from the unpruned teacher."""
    out = []
    cfg, decided = resolve_prune(cfg, inputs.card)  # a no-op where the caller decided auto
    ratio_why = {**decided, **inputs.prune_why}
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
