"""The GAN: networks for every supported size, training with resume, the distance, the gate."""

import numpy as np
import pytest
import torch

from evergreen.config import GanConfig, TrainConfig
from nets.gan import build_discriminator, build_generator, load_generator, plan
from tasks.gan import (
    class_loss,
    coverage,
    ema_update,
    evaluate_generator,
    frechet_distance,
    gan_gates,
    mode_seeking_loss,
    paired,
    sample_grid_png,
    sample_images,
    train_gan,
)

SIZES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("in_shape", SIZES)
def test_generator_and_discriminator_fit_each_supported_size(in_shape, conditional):
    torch.manual_seed(0)
    g = build_generator(in_shape, 5, latent_dim=16, width=8, conditional=conditional)
    d = build_discriminator(in_shape, 5, width=8, conditional=conditional)
    y = torch.tensor([0, 4, 2])
    images = g(torch.randn(3, 16), y)
    assert images.shape == (3, *in_shape)
    assert images.abs().max() <= 1.0  # tanh range, the scale real images are mapped to
    logits = d(images, y)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()
    _, class_logits = d.score(images, y)  # the AC-GAN head exists only when conditional
    assert (class_logits.shape == (3, 5)) if conditional else class_logits is None


def test_ema_warms_up_then_averages_and_copies_batchnorm_statistics():
    import copy

    g = build_generator((1, 8, 8), 3, latent_dim=4, width=4)
    ema = copy.deepcopy(g)
    live = next(g.parameters())
    with torch.no_grad():
        live.add_(1.0)
        next(b for b in g.buffers() if b.dtype.is_floating_point).add_(2.0)
    before = next(ema.parameters()).clone()
    ema_update(ema, g, decay=0.99, step=0)  # warm-up: decay min(0.99, 1/10) -> moves 90%
    assert torch.allclose(next(ema.parameters()), before + 0.9, atol=1e-6)
    ema_update(ema, g, decay=0.99, step=10_000)  # then the decay itself: 1% of what is left
    assert torch.allclose(next(ema.parameters()), before + 0.9 + 0.001, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(ema.buffers(), g.buffers(), strict=True))
    ema_update(ema, g, decay=0.0, step=0)  # 0: the live weights
    assert torch.equal(next(ema.parameters()), live)


def test_mode_seeking_pairs_share_a_class_and_alike_fakes_cost_more():
    labels = torch.tensor([3, 1, 4, 1, 5])
    assert paired(labels).tolist() == [3, 1, 3, 1, 5]  # fake i + 2 repeats fake i's class
    assert paired(None) is None
    cfg = GanConfig(mode_seeking_weight=2.0)
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # |dz| = 1 per pair
    alike = torch.zeros(4, 1, 2, 2)
    apart = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert mode_seeking_loss(z, apart, cfg) == pytest.approx(2.0 / (1.0 + 1e-5))
    assert mode_seeking_loss(z, alike, cfg) == pytest.approx(2.0 / 1e-5)
    assert mode_seeking_loss(z, alike, GanConfig(mode_seeking_weight=0.0)) == 0.0


def test_class_loss_is_weighted_cross_entropy_and_off_when_unconditional():
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    expected = torch.nn.functional.cross_entropy(logits, y)
    assert torch.isclose(class_loss(logits, y, 0.5), 0.5 * expected)
    assert class_loss(None, None, 1.0) == 0.0
    assert class_loss(logits, y, 0.0) == 0.0


def test_generator_has_the_dcgan_stabilizers():
    g, d = build_generator((1, 28, 28), 10), build_discriminator((1, 28, 28), 10)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in d.modules())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in g.modules())


@pytest.mark.parametrize("in_shape, message", [
    ((1, 8, 12), "square"), ((1, 27, 27), "b \\* 2\\*\\*k"), ((3, 5, 5), "b \\* 2\\*\\*k"),
    ((1, 36, 36), "b \\* 2\\*\\*k"),  # 36 = 9 * 4: the base map would be too large
])
def test_unsupported_sizes_are_refused_with_the_rule(in_shape, message):
    with pytest.raises(ValueError, match=message):
        build_generator(in_shape, 2)


def test_plan_sizes():
    assert [plan(s) for s in SIZES] == [(4, 1), (7, 2), (4, 3), (4, 4)]


def test_frechet_distance_matches_the_closed_form():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(300, 6)) @ rng.normal(size=(6, 6))
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b)
                - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(9.0 * 6, rel=1e-6)  # mean shift only


def test_coverage_counts_predicted_classes():
    proba = np.eye(3)[[0, 0, 1, 1, 1, 0, 0, 0]]
    assert coverage(proba, ["a", "b", "c"]) == {"a": 0.625, "b": 0.375, "c": 0.0}


def report(distance=10.0, ceiling=100.0, low=0.09):
    return {"distance": distance, "distance_to_ceiling": distance / ceiling,
            "min_class_share_vs_uniform": low * 10}


def failed(gates):
    return {g.name for g in gates if not g.passed}


def test_gate_passes_a_close_generator_with_full_coverage():
    assert failed(gan_gates(report(), None, GanConfig())) == set()


def test_gate_rejects_distance_above_the_thresholds():
    assert failed(gan_gates(report(distance=30.0), None, GanConfig())) == {"max_distance_ratio"}
    cfg = GanConfig(max_distance=5.0)
    assert failed(gan_gates(report(), None, cfg)) == {"max_distance"}


def test_gate_rejects_a_missing_class():
    assert failed(gan_gates(report(low=0.01), None, GanConfig())) == {"min_class_coverage"}


def test_gate_rejects_worse_than_the_champion():
    assert failed(gan_gates(report(distance=10.0), 9.0, GanConfig())) == {"not_worse_than_champion"}
    assert failed(gan_gates(report(distance=10.0), 10.0, GanConfig())) == set()
    assert failed(gan_gates(report(distance=10.0), 9.0, GanConfig(champion_tolerance=0.2))) == set()


TINY_GAN = {"epochs": 3, "batch_size": 32, "latent_dim": 16, "width": 8, "samples": 100}


def test_training_resumes_from_its_checkpoint(data, tmp_path):
    train, _, classes, _ = data
    ckpt = tmp_path / "gan.pt"
    straight, _, history = train_gan(train, classes, GanConfig(**TINY_GAN))
    train_gan(train, classes, GanConfig(**{**TINY_GAN, "epochs": 2}), ckpt, "k")
    # the 3-epoch run's key differs from the 2-epoch run's in the flow; here it is shared on purpose
    resumed, _, resumed_history = train_gan(train, classes, GanConfig(**TINY_GAN), ckpt, "k")
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3]
    assert resumed_history == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(np.isfinite([r["d_loss"], r["g_loss"]]).all() for r in history)


def test_other_key_starts_over(data, tmp_path):
    train, _, classes, _ = data
    ckpt = tmp_path / "gan.pt"
    train_gan(train, classes, GanConfig(**{**TINY_GAN, "epochs": 1}), ckpt, "old")
    _, _, history = train_gan(train, classes, GanConfig(**{**TINY_GAN, "epochs": 1}), ckpt, "new")
    assert [r["epoch"] for r in history] == [1]


def test_generator_saves_and_loads_without_pickle(data, tmp_path):
    from nets.io import save_model

    train, _, classes, _ = data
    g, card, _ = train_gan(train, classes, GanConfig(**{**TINY_GAN, "epochs": 1}))
    save_model(g, card, tmp_path / "gan")
    loaded, loaded_card = load_generator(tmp_path / "gan")
    assert loaded_card == card
    a, la = sample_images(g, 20, seed=3)
    b, lb = sample_images(loaded, 20, seed=3)
    assert a.dtype == np.uint8 and a.shape == (20, 1, 8, 8)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert list(la[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # classes in turn


def test_sample_grid_is_a_png_of_the_tiles():
    from io import BytesIO

    from PIL import Image

    images = np.zeros((12, 3, 8, 8), dtype=np.uint8)
    png = Image.open(BytesIO(sample_grid_png(images, columns=5, scale=2)))
    assert png.size == ((5 * 9 + 1) * 2, (3 * 9 + 1) * 2)
    assert png.mode == "RGB"


@pytest.fixture(scope="module")
def digit_splits():
    from evergreen.config import PreprocessConfig
    from tasks.ingest import content_hash, metadata_table
    from tasks.preprocess import preprocess
    from tasks.readers import load_digits_batch

    batch = load_digits_batch()
    meta = metadata_table(batch, [content_hash(img) for img in batch.x], "b0")
    return preprocess(batch.x, batch.labels, meta, PreprocessConfig())


def test_conditional_generator_makes_the_requested_classes(digit_splits):
    """A tiny run: a small classifier and a few GAN epochs on digits; the classifier agrees."""
    from tasks.train import train_model

    torch.set_num_threads(1)
    p = digit_splits
    train, val = p.splits["train"], p.splits["val"]
    clf_cfg = TrainConfig(model="seed_cnn", epochs=6, batch_size=32, augment={"enabled": False})
    classifier, clf_card, _ = train_model(train, val, p.classes, (p.mean, p.std), clf_cfg)
    cfg = GanConfig(epochs=CONDITIONAL_EPOCHS, samples=200)
    g, _, _ = train_gan(train, p.classes, cfg)
    heldout = np.concatenate([val[0], p.splits["test"][0]])
    result, fakes, requested = evaluate_generator(g, classifier, clf_card, train[0], heldout, cfg)
    assert result["conditional_accuracy"] >= 0.5  # five times chance; 1.0 when measured
    assert result["floor"] < result["distance"] < result["ceiling"]
    assert len(result["coverage"]) == 10


CONDITIONAL_EPOCHS = 12
