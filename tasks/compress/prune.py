"""Structured pruning with Torch-Pruning: the ratio the size budget asks for (auto), widths in
multiples the CPU runs at full speed, and the pruned teacher rebuilt as a smaller dense cnn."""

from __future__ import annotations

import copy

import torch
from torch import nn

from evergreen.config import CompressConfig
from nets import build_model
from nets.io import card_options
from tasks.compress.variant import NotApplicable


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
