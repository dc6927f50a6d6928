"""The GAN: networks for every supported size, training with resume, the distance, the gate."""

import numpy as np
import pytest
import torch

from evergreen.config import GanConfig, TrainConfig
from nets.gan import build_discriminator, build_generator, load_generator, plan
from tasks.gan.augment import cutout, diff_augment, translate
from tasks.gan.ema import ema_update, recalibrate_batchnorm
from tasks.gan.loop import train_gan
from tasks.gan.losses import class_loss, discriminator_loss, mode_seeking_loss, paired
from tasks.gan.metrics import coverage, evaluate_generator, frechet_distance
from tasks.gan.plan import gan_plan
from tasks.gan.samples import sample_grid_png, sample_images
from tasks.promote import gan_gates

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


def test_generator_and_discriminator_have_the_sngan_stabilizers():
    from torch.nn.utils import parametrize

    g, d = build_generator((1, 28, 28), 10), build_discriminator((1, 28, 28), 10, conditional=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in d.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    weighted = [m for m in d.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert weighted and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    assert parametrize.is_parametrized(d.head, "weight")  # spectral norm on every D layer


def test_conditional_batchnorm_gives_each_class_its_own_scale():
    g = build_generator((1, 8, 8), 3, latent_dim=4, width=4, conditional=True).eval()
    with torch.no_grad():
        g.norms[-1].gain.weight[1].mul_(3.0)
    z = torch.randn(2, 4)
    same = g(z, torch.tensor([0, 0]))
    assert torch.equal(same, g(z, torch.tensor([0, 0])))
    assert not torch.allclose(g(z, torch.tensor([1, 1])), same)


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


def test_steps_auto_are_passes_over_the_data_within_the_floor_and_the_cap():
    cfg = GanConfig(passes=100.0, min_steps=4000, max_steps=12_000, batch_size=64)
    assert gan_plan(cfg, (1, 64, 64), 280)["steps"] == 4000  # 914 passes' worth: the floor
    assert gan_plan(cfg, (1, 64, 64), 4000)["steps"] == 6250  # 100 x 4000 / 64
    assert gan_plan(cfg, (3, 32, 32), 27_000)["steps"] == 12_000  # the cap
    assert gan_plan(GanConfig(steps=7), (1, 64, 64), 280)["steps"] == 7  # a set value wins
    assert gan_plan(cfg, (1, 8, 8), 20)["batch_size"] == 20  # never more than the data


def test_width_auto_shrinks_with_the_side_and_a_set_width_wins():
    cfg = GanConfig()
    assert [gan_plan(cfg, (3, s, s), 1000)["width"] for s in (8, 32, 64, 128)] == [32, 32, 16, 8]
    assert gan_plan(GanConfig(width=48), (3, 128, 128), 1000)["width"] == 48


def test_the_minutes_cap_stops_training_and_is_recorded(data):
    train, _, classes, _ = data
    ticks = iter(range(0, 10_000, 30))  # a fake clock: 30 s per reading

    def clock():
        return float(next(ticks))

    cfg = GanConfig(**{**TINY_GAN, "steps": 50, "minutes": 1.0})
    _, card, history = train_gan(train, classes, cfg, every=5, clock=clock)
    # readings: start 0, then one per row: 30 s, 60 s -> the second row reaches the cap
    assert [r["step"] for r in history] == [5, 10]
    assert card["training"]["stopped_by"] == "minutes"
    assert card["training"]["steps"] == 10 and card["training"]["planned_steps"] == 50


def test_training_records_the_resolved_plan(data):
    train, _, classes, _ = data
    _, card, history = train_gan(train, classes, GanConfig(**{**TINY_GAN, "steps": 7}), every=5)
    assert [r["step"] for r in history] == [5, 7]
    assert card["training"]["steps"] == 7 and card["training"]["stopped_by"] is None
    assert card["options"]["width"] == card["training"]["width"] == 8


TINY_GAN = {"steps": 30, "batch_size": 32, "latent_dim": 16, "width": 8, "samples": 100}


def test_training_resumes_from_its_checkpoint(data, tmp_path):
    train, _, classes, _ = data
    ckpt = tmp_path / "gan.pt"
    straight, _, history = train_gan(train, classes, GanConfig(**TINY_GAN), every=10)
    train_gan(train, classes, GanConfig(**{**TINY_GAN, "steps": 20}), ckpt, "k", every=10)
    # the 30-step run's key differs from the 20-step run's in the flow; here it is shared on purpose
    resumed, _, resumed_history = train_gan(train, classes, GanConfig(**TINY_GAN), ckpt, "k",
                                            every=10)
    assert [r["step"] for r in resumed_history] == [10, 20, 30]
    assert resumed_history == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(np.isfinite([r["d_loss"], r["g_loss"]]).all() for r in history)


def test_other_key_starts_over(data, tmp_path):
    train, _, classes, _ = data
    ckpt = tmp_path / "gan.pt"
    cfg = GanConfig(**{**TINY_GAN, "steps": 10})
    train_gan(train, classes, cfg, ckpt, "old", every=10)
    _, _, history = train_gan(train, classes, cfg, ckpt, "new", every=10)
    assert [r["step"] for r in history] == [10]


def test_diff_augment_keeps_shapes_and_an_empty_policy_is_the_identity():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    assert diff_augment(x, ["color", "translation", "cutout"], gen).shape == x.shape
    assert torch.equal(diff_augment(x, [], gen), x)
    x.requires_grad_(True)  # differentiable: the generator learns through it
    diff_augment(x, ["color", "translation", "cutout"], gen).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_translation_moves_content_and_fills_with_zero():
    x = torch.zeros(20, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    out = translate(x, ratio=0.25, gen=torch.Generator().manual_seed(1))
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # shifted within the frame, not lost
    assert not torch.equal(out, x)
    edge = translate(torch.ones(20, 1, 8, 8), 0.25, torch.Generator().manual_seed(1))
    assert (edge == 0).any() and set(edge.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_a_square_of_half_the_side():
    out = cutout(torch.ones(10, 2, 8, 8), ratio=0.5, gen=torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert ((zeros >= 4) & (zeros <= 16)).all()  # a 4 x 4 square, clipped at the border
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0)  # the same square in every channel


def test_hinge_loss_is_zero_for_a_confident_discriminator():
    class Fixed(torch.nn.Module):
        def score(self, x, y=None):
            return x.flatten(1).mean(1) * 10, None  # bright: real, dark: fake

    real, fake = torch.ones(4, 1, 2, 2), -torch.ones(4, 1, 2, 2)
    cfg = GanConfig(augment=[])
    loss, d_real, d_fake = discriminator_loss(Fixed(), real, fake, None, None, cfg,
                                              torch.Generator())
    assert loss.item() == 0.0 and d_real == 10.0 and d_fake == -10.0
    swapped, _, _ = discriminator_loss(Fixed(), fake, real, None, None, cfg, torch.Generator())
    assert swapped.item() == pytest.approx(22.0)  # relu(1 + 10) twice


def test_recalibrated_batchnorm_describes_the_generators_own_activations():
    g = build_generator((1, 8, 8), 3, latent_dim=4, width=4)
    norm = g.norms[-1].norm
    norm.running_mean.fill_(5.0)  # statistics of some other network's activations
    recalibrate_batchnorm(g, None, torch.Generator().manual_seed(0))
    assert not g.training
    assert norm.running_mean.abs().max() < 1.0 and norm.momentum == 0.1


def test_generator_saves_and_loads_without_pickle(data, tmp_path):
    from nets.io import save_model

    train, _, classes, _ = data
    g, card, _ = train_gan(train, classes, GanConfig(**{**TINY_GAN, "steps": 5}))
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
    from tasks.ingest import content_hash, load_digits_batch, metadata_table
    from tasks.preprocess import preprocess

    batch = load_digits_batch()
    meta = metadata_table(batch, [content_hash(img) for img in batch.x], "b0")
    return preprocess(batch.x, batch.labels, meta, PreprocessConfig())


def test_conditional_generator_makes_the_requested_classes(digit_splits):
    """A tiny run: a small classifier and a few hundred GAN steps on digits; the classifier agrees."""
    from tasks.train import train_model

    torch.set_num_threads(1)
    p = digit_splits
    train, val = p.splits["train"], p.splits["val"]
    clf_cfg = TrainConfig(model="seed_cnn", epochs=6, batch_size=32, augment={"enabled": False})
    classifier, clf_card, _ = train_model(train, val, p.classes, (p.mean, p.std), clf_cfg)
    # DiffAugment is for small sets and slows the first steps (its own tests are above)
    cfg = GanConfig(steps=CONDITIONAL_STEPS, samples=200, augment=[])
    g, _, _ = train_gan(train, p.classes, cfg)
    heldout = np.concatenate([val[0], p.splits["test"][0]])
    result, fakes, requested = evaluate_generator(g, classifier, clf_card, train[0], heldout, cfg)
    assert result["conditional_accuracy"] >= 0.5  # five times chance; 1.0 when measured
    assert result["floor"] < result["distance"] < result["ceiling"]
    assert len(result["coverage"]) == 10


CONDITIONAL_STEPS = 600


def test_balanced_batches_draw_every_class_alike_however_rare():
    from tasks.gan.batches import balanced_indices, real_batch

    y = torch.tensor([0] * 900 + [1] * 90 + [3] * 10)  # class 2 absent, class 3 rare
    n = torch.arange(len(y))  # each image names its index: two uint8 pixels
    x = torch.stack([n // 256, n % 256], 1).to(torch.uint8).view(-1, 1, 1, 2).numpy()

    def index_of(images):  # the reals come scaled to [-1, 1]
        pixels = ((images + 1) * 127.5).round().long().view(-1, 2)
        return pixels[:, 0] * 256 + pixels[:, 1]

    idx = balanced_indices(y, 30_000, torch.Generator().manual_seed(0))
    shares = torch.bincount(y[idx], minlength=4).float() / len(idx)
    assert shares[2] == 0 and torch.allclose(shares[[0, 1, 3]], torch.full((3,), 1 / 3), atol=0.02)
    assert len(torch.unique(idx[y[idx] == 3])) == 10  # every image of the rare class is drawn
    images, labels = real_batch(x, y, 64, GanConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(y[index_of(images)], labels)  # the labels belong to the images
    # unbalanced (or unconditional): the data's proportions, no repeats
    images, labels = real_batch(x, y, 64, GanConfig(balance_classes=False), torch.Generator())
    assert len(torch.unique(index_of(images))) == 64 and torch.equal(y[index_of(images)], labels)
    assert real_batch(x, y, 8, GanConfig(conditional=False), torch.Generator())[1] is None
