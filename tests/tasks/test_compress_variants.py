"""Compress variants: real structured pruning, int8, ONNX parity, selection by budget."""

import numpy as np
import pytest
import torch

from evergreen.config import CompressConfig, SelectConfig, TrainConfig
from nets import build_model
from nets.inputs import normalize
from nets.io import load_model
from tasks.compress import (
    Inputs,
    build_variants,
    calibration_batch,
    conv_channels,
    measure_variants,
    prune_channels,
    save_variant,
    select_variant,
)
from tasks.export import PARITY_ATOL, parity
from tasks.train import train_model
from tests.conftest import TINY_PARAMS


def cnn_card(channels=(16, 32)):
    return {"arch": "cnn", "options": {"channels": list(channels), "dropout": 0.2},
            "in_shape": [1, 8, 8], "classes": [str(i) for i in range(10)],
            "mean": [0.3], "std": [0.4]}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("ratio, expected", [(0.5, [8, 16]), (0.75, [4, 8])])
def test_pruning_removes_channels_and_parameters(ratio, expected):
    card = cnn_card()
    torch.manual_seed(0)
    teacher = build_model("cnn", (1, 8, 8), 10, **card["options"]).eval()
    pruned, pcard = prune_channels(teacher, card, ratio)
    assert conv_channels(pruned)[::2] == expected and pcard["options"]["channels"] == expected
    assert n_params(pruned) < n_params(teacher) * (1 - ratio) ** 2 * 1.5
    out = pruned(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    # the card alone rebuilds it: a dense cnn of the smaller widths
    rebuilt = build_model("cnn", (1, 8, 8), 10, **pcard["options"])
    rebuilt.load_state_dict(pruned.state_dict())
    assert pcard["compression"]["method"] == "pruning"


def sign_card(channels=(32, 64, 128)):
    """A 32 px RGB teacher with 43 classes (GTSRB's shape)."""
    return {"arch": "cnn", "options": {"channels": list(channels), "stem_stride": 1},
            "in_shape": [3, 32, 32], "classes": [str(i) for i in range(43)]}


def test_pruned_widths_keep_multiples_of_round_to():
    from tasks.compress import pruned_widths

    assert pruned_widths([32, 64, 128], 0.5, 8) == [16, 32, 64]
    assert pruned_widths([32, 64, 128], 0.55, 8) == [16, 32, 56]  # 14.4, 28.8, 57.6 without
    assert pruned_widths([32, 64, 128], 0.55, 1) == [14, 29, 58]
    assert pruned_widths([8, 16], 0.75, 8) == [2, 4]  # no multiple of 8 left: the nearest channel


def test_auto_ratio_is_the_mildest_that_fits_the_size_budget():
    from tasks.compress import auto_prune_ratio, pruned_widths, weight_count

    card = sign_card()
    full = weight_count(card, [32, 64, 128])
    for budget in (0.25, 0.5, 0.1):
        ratio, why = auto_prune_ratio(card, budget, 8)
        assert weight_count(card, pruned_widths([32, 64, 128], ratio, 8)) <= budget * full
        milder = round(ratio - 0.01, 2)
        assert weight_count(card, pruned_widths([32, 64, 128], milder, 8)) > budget * full
        assert "max_size_ratio" in why
    # halving every width leaves the stem's inputs and the head's outputs: just over a quarter
    assert auto_prune_ratio(card, 0.25, 8)[0] > 0.5
    assert auto_prune_ratio(card, None, 8) == (0.5, "no size budget")


def test_resolve_prune_decides_auto_and_keeps_set_ratios():
    from tasks.compress import pruned_name, resolve_prune

    cfg = CompressConfig(prune={"ratios": ["auto", 0.75]})
    resolved, why = resolve_prune(cfg, sign_card())
    auto = resolved.prune.ratios[0]
    assert resolved.prune.ratios == [auto, 0.75] and 0.5 < auto < 0.75
    assert why[0.75] == "compress.prune.ratios" and pruned_name(auto) != "pruned_50"
    same, _ = resolve_prune(CompressConfig(prune={"ratios": [0.5, 0.5]}), sign_card())
    assert same.prune.ratios == [0.5]
    with pytest.raises(ValueError, match="strictly between"):
        CompressConfig(prune={"ratios": ["auto", 1.0]})


def test_auto_pruning_of_a_photo_teacher_fits_a_quarter_in_multiples_of_8():
    from tasks.compress import resolve_prune, weight_count

    card = sign_card()
    torch.manual_seed(0)
    teacher = build_model("cnn", (3, 32, 32), 43, **card["options"]).eval()
    cfg, _ = resolve_prune(CompressConfig(), card)
    pruned, pcard = prune_channels(teacher, card, cfg.prune.ratios[0], cfg.prune.round_to)
    widths = conv_channels(pruned)
    assert all(w % 8 == 0 for w in widths) and widths[::2] == pcard["options"]["channels"]
    share = weight_count(pcard, widths[::2]) / weight_count(card, [32, 64, 128])
    assert share <= 0.25 and n_params(pruned) <= 0.25 * n_params(teacher)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 43)


def test_a_pruned_card_says_why_its_ratio_was_taken(data):
    from tasks.compress import resolve_prune
    from tasks.compress.variants import pruned_variants

    train, val, classes, norm = data
    card = {**cnn_card((32, 64)), "mean": norm[0], "std": norm[1]}
    teacher = build_model("cnn", (1, 8, 8), 10, **card["options"]).eval()
    auto = CompressConfig(prune={"ratios": ["auto"], "epochs": 0})
    decided, why = resolve_prune(auto, card)  # as the compress stage does, once
    for cfg, prune_why in ((decided, why), (auto, {})):  # decided by the caller, or here
        [variant] = pruned_variants(Inputs(teacher, card, train, val, prune_why=prune_why), cfg)
        assert "max_size_ratio" in variant.card["compression"]["ratio_why"]


def test_int8_copies_are_asked_for_by_name_or_kind():
    from tasks.compress import int8_sources

    by_kind = CompressConfig(prune={"ratios": [0.5, 0.75]},
                             quantize={"variants": ["pruned", "distilled"]})
    assert int8_sources(("teacher", "pruned"), by_kind) == ["pruned_50", "pruned_75"]
    assert int8_sources(("distilled", "control"), by_kind) == ["distilled"]
    by_name = by_kind.model_copy(update={"quantize": by_kind.quantize.model_copy(
        update={"variants": ["pruned_75"]})})
    assert int8_sources(("teacher", "pruned"), by_name) == ["pruned_75"]


def test_pruning_refuses_other_architectures():
    card = {**cnn_card(), "arch": "seed_cnn", "options": {}}
    from tasks.compress import NotApplicable

    with pytest.raises(NotApplicable, match="supports the cnn teacher"):
        prune_channels(build_model("seed_cnn", (1, 8, 8), 10), card, 0.5)


@pytest.fixture(scope="module")
def variants(tmp_path_factory, digits):
    """Every variant of a 1-epoch teacher on 200 digits, saved and measured."""
    from evergreen.config import PreprocessConfig
    from tasks.ingest import content_hash, metadata_table
    from tasks.preprocess import preprocess

    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:20] for c in range(10)])
    x, labels = digits.x[keep], digits.labels[keep]
    meta = metadata_table(type(digits)(x, labels, [digits.sources[i] for i in keep]),
                          [content_hash(img) for img in x], "b0")
    p = preprocess(x, labels, meta, PreprocessConfig())
    train, val, test = p.splits["train"], p.splits["val"], p.splits["test"]
    torch.set_num_threads(1)
    teacher, card, _ = train_model(train, val, p.classes, (p.mean, p.std),
                                   TrainConfig.model_validate({**TINY_PARAMS["train"], "epochs": 1}))
    cfg = CompressConfig.model_validate({**TINY_PARAMS["compress"], "epochs": 1, "control": True})
    built, skipped = build_variants(Inputs(teacher, card, train, val), cfg)
    out = tmp_path_factory.mktemp("variants")
    check = calibration_batch(val, card, len(val[0]), 0)
    exports = {name: save_variant(v, out / name, check) for name, v in built.items()}
    rows = {name: {**row, **exports[name]}
            for name, row in measure_variants(built, out, val, test, cfg.select).items()}
    return built, skipped, rows, out, check


def test_every_configured_variant_is_built(variants):
    built, skipped, rows, _, _ = variants
    assert set(built) == {"teacher", "pruned_50", "distilled", "control", "pruned_50_int8"}, skipped
    for row in rows.values():
        for key in ("name", "method", "accuracy", "f1_macro", "latency_ms_p50", "latency_ms_p95",
                    "size_bytes", "params"):
            assert key in row
    assert rows["control"]["method"] == "student_without_distillation"
    assert rows["pruned_50_int8"]["method"] == "pruning+int8"


def test_fp32_onnx_export_matches_pytorch(variants):
    built, _, rows, out, check = variants
    for name in ("teacher", "pruned_50", "distilled"):
        assert rows[name]["onnx_max_abs_diff"] <= PARITY_ATOL
        served, _ = load_model(out / name, prefer_onnx=True)
        assert parity(built[name].model, served, check) <= PARITY_ATOL


def test_int8_is_smaller_and_served_from_onnx_alone(variants):
    _, _, rows, out, _ = variants
    import onnx

    assert rows["pruned_50_int8"]["size_bytes"] < rows["pruned_50"]["size_bytes"]
    weights = [t for t in onnx.load(str(out / "pruned_50_int8" / "model.onnx")).graph.initializer
               if len(t.dims) > 1]  # kernels and matrices, not biases or scales
    assert weights and all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    assert not (out / "pruned_50_int8" / "model.safetensors").exists()
    model, card = load_model(out / "pruned_50_int8")  # no pickle, no fp32 weights
    assert card["format"] == "onnx"
    x = normalize(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), card["mean"], card["std"])
    assert model(x).shape == (4, 10)
    assert rows["pruned_50_int8"]["onnx_max_abs_diff"] < 0.05  # vs the PT2E graph, int8 rounding


def row(name, val_accuracy=0.99, latency=1.0, size_kb=100):
    return {"name": name, "val_accuracy": val_accuracy, "accuracy": val_accuracy,
            "latency_ms_p50": latency, "latency_ms_p95": latency, "size_bytes": size_kb * 1024}


def test_selection_takes_the_best_variant_within_budget():
    rows = [row("teacher", 1.0, 2.0, 1000), row("pruned", 0.995, 1.0, 200),
            row("small", 0.995, 0.5, 50), row("bad", 0.9, 0.1, 10)]
    cfg = SelectConfig(max_accuracy_drop=0.01, max_latency_ms=1.5, max_size_kb=300)
    name, reason = select_variant(rows, cfg)
    assert name == "small" and "within budget" in reason
    assert not rows[0]["fits"] and "max_size_kb" in " ".join(rows[0]["outside_budget"])
    assert "max_accuracy_drop" in " ".join(rows[3]["outside_budget"])
    assert select_variant(rows, cfg.model_copy(update={"objective": "latency"}))[0] == "small"
    assert select_variant(rows, cfg.model_copy(update={"max_accuracy_drop": 0.2,
                                                       "objective": "size"}))[0] == "bad"


def test_selection_needs_the_minimum_speedup_over_the_teacher():
    rows = [row("teacher", 1.0, 0.3, 1000), row("pruned", 0.995, 0.15, 200),
            row("student", 0.99, 0.09, 50)]
    cfg = SelectConfig(max_accuracy_drop=0.02, max_latency_ms=1.0, max_size_kb=300, min_speedup=3.0)

    name, _ = select_variant(rows, cfg)

    assert name == "student"  # the more accurate pruned variant is only 2x faster
    assert "min_speedup 3.0" in " ".join(rows[1]["outside_budget"])
    assert select_variant(rows, cfg.model_copy(update={"min_speedup": 0.0}))[0] == "pruned"


def test_selection_explains_when_nothing_fits_and_falls_back_to_the_teacher():
    rows = [row("teacher", 1.0, 2.0, 1000), row("small", 0.9, 0.5, 50)]
    cfg = SelectConfig(max_accuracy_drop=0.01, max_size_kb=100, fallback="none")
    name, reason = select_variant(rows, cfg)
    assert name is None
    assert "no variant fits" in reason and "small: val accuracy" in reason
    name, reason = select_variant(rows, cfg.model_copy(update={"fallback": "teacher"}))
    assert name == "teacher" and "the teacher is the candidate" in reason


def test_size_budget_is_relative_to_the_teacher_by_default():
    rows = [row("teacher", 1.0, 3.0, 4000), row("quarter", 0.995, 0.5, 1000),
            row("third", 0.999, 0.5, 1400)]
    cfg = SelectConfig()  # max_size_ratio 0.25, min_speedup 3, no absolute KB or ms limit
    assert cfg.max_size_kb is None and cfg.max_latency_ms is None
    assert select_variant(rows, cfg)[0] == "quarter"
    assert "0.35 of the teacher's > max_size_ratio 0.25" in " ".join(rows[2]["outside_budget"])
    tiny = [row("teacher", 1.0, 3.0, 40), row("quarter", 0.995, 0.5, 10)]
    assert select_variant(tiny, cfg)[0] == "quarter"  # 10 KB fits: no absolute size stands in


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 48), (3, 128, 128)])
def test_the_auto_student_is_never_larger_than_its_teacher(in_shape):
    import nets
    from evergreen.config import TrainConfig
    from tasks.compress import student_arch
    from tasks.train.adapt import model_options

    options = model_options(TrainConfig(), in_shape)
    card = {"arch": "cnn", "options": options, "in_shape": list(in_shape)}
    teacher = nets.build_model("cnn", in_shape, 43, **options)
    arch, student_options = student_arch("auto", card)
    student = nets.build_model(arch, in_shape, 43, **student_options)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(student) <= count(teacher) / 3 if max(in_shape[1:]) > 16 else arch == "seed_cnn"
    assert student(torch.zeros(2, *in_shape)).shape == (2, 43)
    seed = nets.build_model("seed_cnn", in_shape, 43)
    if max(in_shape[1:]) >= 28:  # why auto leaves the seed's network on large inputs
        assert count(seed) > count(teacher)


QUIET_INT8 = """
import logging
logging.basicConfig(format="%(name)s: %(message)s")  # a console on the root logger, as Prefect's
import torch
from tasks.compress import quantize_int8
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(144, 10))
quantize_int8(net, torch.randn(8, 1, 8, 8))
logging.getLogger("torchao").warning("a real warning")
"""


def test_int8_shows_no_torchao_import_noise_but_real_warnings():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", QUIET_INT8], capture_output=True, text=True,
                          timeout=300, check=True)
    for noise in ("_C_mxfp8", "_C_cutlass_90a", "no triton", "is an Enum subclass"):
        assert noise not in done.stderr
    assert "torchao: a real warning" in done.stderr


def fit_rows(*fitting):
    return [{"name": name, "fits": name in fitting} for name in ("teacher", "pruned_50", "pruned_50_int8")]


def test_building_stops_at_the_first_round_with_a_compressed_variant_in_budget():
    from tasks.compress import building_stops

    lazy = CompressConfig()
    why = building_stops(lazy, fit_rows("pruned_50_int8"), "selected")
    assert "pruned_50_int8 already fit the budget" in why and "compress.build" in why
    assert building_stops(lazy, fit_rows(), "selected") is None
    assert building_stops(lazy, fit_rows("teacher"), "selected") is None  # not compressed
    # everything is built: asked for, another objective, the student is the candidate, a control
    assert building_stops(CompressConfig(build="all"), fit_rows("pruned_50"), "selected") is None
    latency = CompressConfig(select={"objective": "latency"})
    assert building_stops(latency, fit_rows("pruned_50"), "selected") is None
    assert building_stops(lazy, fit_rows("pruned_50"), "student") is None
    assert building_stops(CompressConfig(control=True), fit_rows("pruned_50"), "selected") is None


def test_rounds_go_from_the_mildest_pruning_to_the_students():
    from tasks.compress import build_rounds, planned_names

    cfg = CompressConfig(prune={"ratios": [0.75, 0.5]}, control=True)
    rounds = [(kinds, sorted(planned_names(kinds, c))) for kinds, c in build_rounds(cfg)]
    assert rounds == [(("teacher", "pruned"), ["pruned_50", "teacher"]),
                      (("pruned",), ["pruned_75"]),
                      (("distilled", "control"), ["control", "distilled"])]
    unpruned = CompressConfig(prune={"ratios": []})
    assert [kinds for kinds, _ in build_rounds(unpruned)] == [("teacher",), ("distilled", "control")]


def test_variants_are_built_by_round_with_their_own_int8_copies(data):
    from tasks.compress import build_rounds

    train, val, classes, norm = data
    torch.set_num_threads(1)
    teacher, card, _ = train_model(train, val, classes, norm,
                                   TrainConfig.model_validate({**TINY_PARAMS["train"], "epochs": 1}))
    cfg = CompressConfig.model_validate({**TINY_PARAMS["compress"], "epochs": 1,
                                         "prune": {"ratios": [0.5, 0.75], "epochs": 1},
                                         "quantize": {"variants": ["pruned_50", "pruned_75", "distilled"],
                                                      "calibration_samples": 16}})
    built = [build_variants(Inputs(teacher, card, train, val), c, kinds)
             for kinds, c in build_rounds(cfg)]
    assert [(set(variants), skipped) for variants, skipped in built] == [
        ({"teacher", "pruned_50", "pruned_50_int8"}, {}), ({"pruned_75", "pruned_75_int8"}, {}),
        ({"distilled", "distilled_int8"}, {})]


def test_int8_activations_drop_to_7_bits_on_a_cpu_without_vnni(monkeypatch):
    import tasks.compress.quantize as compress

    monkeypatch.setattr(compress, "has_vnni", lambda: False)
    assert compress.resolve_reduce_range("auto")[0] is True
    monkeypatch.setattr(compress, "has_vnni", lambda: True)
    assert compress.resolve_reduce_range("auto") == (False, "VNNI on this CPU: full 8-bit activations")
    assert compress.resolve_reduce_range(True) == (True, "compress.quantize.reduce_range")


@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_graph_quantizes_activations_to_the_range_asked(reduce_range, tmp_path):
    from nets.io import load_onnx
    from tasks.compress import quantize_int8
    from tasks.export import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(32, 5)).eval()
    x = torch.randn(64, 3, 12, 12)
    q = quantize_int8(net, x, reduce_range)
    maxes = {n.args[4] for n in q.graph.nodes
             if "quantize_per_tensor" in str(n.target)}  # (x, scale, zero, min, max, dtype)
    assert maxes == {127 if reduce_range else 255}
    export_onnx(q, (3, 12, 12), tmp_path / "model.onnx")
    with torch.no_grad():
        served, simulated = load_onnx(tmp_path)(x), q(x)
    if reduce_range:  # 7 bits cannot saturate a 16-bit pair sum: the runtime matches the graph
        assert (served.argmax(1) == simulated.argmax(1)).float().mean() >= 0.95
