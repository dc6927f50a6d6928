"""Retrain building blocks: new batches, old test split, label noise, replay, warm start, McNemar, gates."""

import json
import math

import numpy as np
import pytest

from bench.warm_start import seconds_to_target
from evergreen.config import PreprocessConfig, PromoteConfig, RetrainConfig, TrainConfig
from tasks.promote import challenger_gates, mcnemar, paired_summary
from tasks.retrain import (
    batches_of_version,
    landed_batches,
    new_batches,
    replay_mix,
    score_label_noise,
    split_of_batches,
    warm_start_fit,
    warm_start_plan,
)
from tests.conftest import TINY_PARAMS

CLASSES = [str(c) for c in range(10)]


def land(digits, idx, batches_dir):
    from tasks.ingest import Batch, dedupe, write_batch

    batch, hashes, _, _ = dedupe(Batch(digits.x[idx], digits.labels[idx],
                                       [digits.sources[i] for i in idx]), set())
    return write_batch(batch, hashes, batches_dir)


def test_new_batches_are_those_not_in_the_champions_data(digits, tmp_path):
    first = land(digits, np.arange(0, 100), tmp_path)
    second = land(digits, np.arange(100, 150), tmp_path)
    (tmp_path / "orphan.csv").write_text("content_hash\n")  # metadata without a shard: not landed
    assert landed_batches(tmp_path) == sorted([first, second])
    assert new_batches(landed_batches(tmp_path), [first]) == [second]
    assert new_batches(landed_batches(tmp_path), [first, second]) == []
    assert landed_batches(tmp_path / "missing") == []


def test_old_test_split_is_the_test_split_preprocess_made_from_those_batches(digits, tmp_path):
    from tasks.ingest import read_batches
    from tasks.preprocess import preprocess

    cfg = PreprocessConfig()
    first = land(digits, np.arange(0, 600), tmp_path)
    old_x, old_labels = split_of_batches(tmp_path, [first], cfg)
    made = preprocess(*read_batches(tmp_path), cfg)  # the dataset of that one batch
    x, y = made.splits["test"]
    assert {a.tobytes() for a in old_x} == {a.tobytes() for a in x}
    assert sorted(old_labels) == sorted(np.asarray(made.classes)[y])
    land(digits, np.arange(600, 1200), tmp_path)
    grown = preprocess(*read_batches(tmp_path), cfg).splits["test"][0]
    # adding data never moves old samples: the old test split is inside the new one
    assert {a.tobytes() for a in old_x} <= {a.tobytes() for a in grown}
    assert len(grown) > len(old_x)
    assert split_of_batches(tmp_path, ["gone"], cfg) is None


def test_batches_of_a_data_version_from_dvcs_listing(tmp_path):
    listing = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef.dir"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([{"md5": "1", "relpath": "b2.csv"}, {"md5": "2", "relpath": "b2.npz"},
                                   {"md5": "3", "relpath": "b1.csv"}]))
    assert batches_of_version(tmp_path, "abcdef.dir") == ["b1", "b2"]
    assert batches_of_version(tmp_path, "ab0000.dir") is None
    assert batches_of_version(tmp_path, None) is None


def test_permuted_labels_are_suspected_label_noise():
    rng = np.random.default_rng(0)
    truth = rng.choice(CLASSES, 300)
    cfg = RetrainConfig()
    clean = score_label_noise("b", truth, truth, CLASSES, 0.98, cfg)
    assert not clean.suspect and clean.accuracy == 1.0
    noisy = score_label_noise("b", truth, rng.permutation(truth), CLASSES, 0.98, cfg)
    assert noisy.suspect and noisy.accuracy < 0.3
    reason = noisy.reason()
    assert "label noise" in reason and f"{noisy.accuracy:.4f}" in reason and "0.9800" in reason
    assert "retrain.max_label_noise_drop 0.2" in reason


def test_label_noise_threshold_is_a_boundary():
    truth = np.array(["1"] * 100)
    pred = np.array(["1"] * 80 + ["2"] * 20)  # accuracy 0.8
    assert not score_label_noise("b", pred, truth, CLASSES, 0.95,
                                 RetrainConfig(max_label_noise_drop=0.16)).suspect
    assert score_label_noise("b", pred, truth, CLASSES, 0.95,
                             RetrainConfig(max_label_noise_drop=0.14)).suspect


def test_new_classes_and_small_batches_are_not_scored():
    labels = np.array(["new"] * 50 + ["1"] * 5)
    pred = np.array(["1"] * 55)
    score = score_label_noise("b", pred, labels, CLASSES, 0.98, RetrainConfig(min_scored_samples=20))
    assert score.scored == 5 and score.accuracy is None and not score.suspect
    assert "not scored" in score.reason()


def test_replay_mixes_every_new_sample_with_a_ratio_of_old_ones():
    x = np.arange(100)[:, None, None, None].astype(np.uint8)
    train = (x, np.arange(100))
    is_new = np.zeros(100, bool)
    is_new[80:] = True
    (mx, my), info = replay_mix(train, is_new, 1.5, seed=0)
    assert set(range(80, 100)) <= set(my.tolist())
    assert info == {"new_samples": 20, "replay_samples": 30, "old_available": 80, "replay_ratio": 1.5}
    assert len(set(my.tolist())) == 50  # without replacement
    again = replay_mix(train, is_new, 1.5, seed=0)[0][1]
    assert np.array_equal(my, again)  # seeded
    assert replay_mix(train, is_new, 10.0, seed=0)[1]["replay_samples"] == 80  # capped
    assert replay_mix(train, is_new, 0.0, seed=0)[1]["replay_samples"] == 0
    everything = replay_mix(train, np.zeros(100, bool), 1.0, seed=0)[0][1]
    assert len(everything) == 100  # nothing new in train: the whole split


CARD = {"arch": "cnn", "options": {"dropout": 0.2, "channels": [16, 32]}, "in_shape": [1, 8, 8],
        "classes": CLASSES}


@pytest.mark.parametrize("change, expected", [
    ({}, "warm start"),
    ({"mode": "full"}, "retrain.mode is full"),
    ({"card": None}, "no teacher weights"),
    ({"classes": CLASSES + ["x"]}, "class set changed (new ['x']"),
    ({"model": "vit"}, "train.model/options"),
    ({"channels": [8, 16]}, "train.model/options"),
    ({"dropout": 0.5}, "warm start"),  # dropout does not change the weights' shapes
    ({"in_shape": (3, 8, 8)}, "input shape"),
])
def test_warm_start_plan_falls_back_to_full_training(change, expected):
    train = TrainConfig(model=change.get("model", "cnn"), dropout=change.get("dropout", 0.2),
                        cnn={"channels": change.get("channels", [16, 32])})
    warm, why = warm_start_plan(RetrainConfig(mode=change.get("mode", "warm")), train,
                                change.get("card", CARD), change.get("classes", CLASSES),
                                change.get("in_shape", (1, 8, 8)))
    assert warm == (expected == "warm start") and expected in why


def test_mcnemar_exact_and_chi_square_with_continuity_correction():
    ok = np.ones(40, bool)
    champion, challenger = ok.copy(), ok.copy()
    champion[:10] = False  # 10 discordant pairs, all for the challenger: exact binomial
    result = mcnemar(champion, challenger)
    assert (result["champion_only"], result["challenger_only"]) == (0, 10)
    assert result["method"] == "exact binomial"
    assert result["pvalue"] == pytest.approx(2 * 0.5**10)
    champion, challenger = np.ones(100, bool), np.ones(100, bool)
    champion[:30], challenger[30:40] = False, False  # b=10, c=30: chi-square
    result = mcnemar(champion, challenger)
    statistic = (abs(10 - 30) - 1) ** 2 / 40
    assert result["method"].startswith("chi-square")
    assert result["pvalue"] == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # chi2, 1 dof
    assert mcnemar(ok, ok)["pvalue"] == 1.0


def comparison(old_champion=0.95, old_challenger=0.95, improve=0):
    truth = np.array(CLASSES * 10)
    champion = truth.copy()
    champion[:improve] = "wrong"
    challenger = truth.copy()
    challenger[-1] = "wrong"  # one class loses a tenth of its recall
    n = 200
    old_truth = np.array(["1"] * n)
    old_champ = np.where(np.arange(n) < old_champion * n, "1", "2")
    old_chal = np.where(np.arange(n) < old_challenger * n, "1", "2")
    return {"current_test": paired_summary(truth, champion, challenger, 0.05),
            "old_test": paired_summary(old_truth, old_champ, old_chal, 0.05)}


def test_challenger_gates_record_value_threshold_and_detail():
    gates = {g.name: g for g in challenger_gates(comparison(), PromoteConfig(max_class_recall_drop=0.05))}
    assert set(gates) == {"max_class_recall_drop", "max_forgetting"}
    recall = gates["max_class_recall_drop"]
    assert not recall.passed and recall.value == pytest.approx(0.1) and recall.threshold == 0.05
    assert "class 9" in recall.reason() and "0.1 is not <= 0.05" in recall.reason()
    assert gates["max_forgetting"].passed


def test_forgetting_gate_measures_the_old_test_split():
    gates = challenger_gates(comparison(old_champion=0.98, old_challenger=0.95),
                             PromoteConfig(max_forgetting=0.01))
    forgetting = next(g for g in gates if g.name == "max_forgetting")
    assert not forgetting.passed and forgetting.value == pytest.approx(0.03)
    assert "old test split, 200 samples" in forgetting.reason()


def test_improvement_needs_mcnemar_when_required():
    cfg = PromoteConfig(require_improvement=True)
    small = next(g for g in challenger_gates(comparison(improve=3), cfg)
                 if g.name == "significant_improvement")
    assert not small.passed and small.value > 0.05  # 3 vs 1 discordant: not significant
    big = comparison(improve=40)
    assert big["current_test"]["improvement"]
    assert next(g for g in challenger_gates(big, cfg) if g.name == "significant_improvement").passed
    behind = next(g for g in challenger_gates(comparison(improve=0), cfg)
                  if g.name == "significant_improvement")
    assert behind.value == 1.0 and "not ahead" in behind.reason()
    assert "significant_improvement" not in {g.name for g in challenger_gates(big, PromoteConfig())}


def test_seconds_to_target():
    history = [{"val_acc": a} for a in (0.5, 0.9, 0.97, 0.99)]
    assert seconds_to_target(history, 8.0, 0.97) == pytest.approx(6.0)
    assert seconds_to_target(history, 8.0, 0.995) is None


def test_warm_start_fine_tunes_from_where_the_champion_left_off(data):
    import copy

    import torch

    from evergreen.config import Config
    from tasks.train import train_model

    train, val, classes, norm = data
    cfg = Config.model_validate(TINY_PARAMS)
    teacher, card, _ = train_model(train, val, classes, norm, cfg.train.model_copy(update={"epochs": 6}))
    model, history = warm_start_fit(copy.deepcopy(teacher), card, train, val, cfg.train,
                                    RetrainConfig(epochs=2, lr=1e-3))
    scratch = train_model(train, val, classes, norm, cfg.train.model_copy(update={"epochs": 1}))[2]
    assert len(history) == 2 and all(math.isfinite(r["train_loss"]) for r in history)
    assert history[0]["val_acc"] > scratch[0]["val_acc"]  # starts from the champion, not from noise
    moved = [not torch.equal(a, b) for a, b in zip(model.parameters(), teacher.parameters())]
    assert any(moved)  # fine-tuned, and the champion's own weights were left alone (a copy)
