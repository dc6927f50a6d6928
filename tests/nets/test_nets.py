"""Networks: every builder for every input shape, the seed's layout, safe save/load."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nets
from evergreen.errors import BadInputError
from nets.io import CARD, WEIGHTS, load_model, save_model


def make(arch, in_shape, classes=10, seed=0, **options):
    torch.manual_seed(seed)
    return nets.build_model(arch, in_shape, classes, **options)


def card_for(arch, in_shape, options=None, classes=10):
    return {"arch": arch, "options": options or {}, "in_shape": list(in_shape),
            "classes": [str(c) for c in range(classes)],
            "mean": [0.5] * in_shape[0], "std": [0.25] * in_shape[0]}


@pytest.mark.parametrize("arch", sorted(nets.BUILDERS))
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_arch_builds_and_gives_finite_logits(arch, in_shape):
    model = make(arch, in_shape, classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(3, *in_shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="resnet"):
        nets.build_model("resnet", (1, 8, 8), 10)


def test_seed_cnn_has_the_seed_layout():
    model = make("seed_cnn", (1, 8, 8), classes=10, dropout=0.3)
    layers = [m for m in model.modules() if not list(m.children())]
    core = [m for m in layers if not isinstance(m, (nn.Flatten, nn.Dropout))]

    assert [type(m) for m in core] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d,
                                       nn.Linear, nn.ReLU, nn.Linear]
    conv, _, pool, dense, _, out = core
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 32, (3, 3))
    assert pool.kernel_size == 2
    assert (dense.in_features, dense.out_features) == (32 * 3 * 3, 64)  # 8 -> 6 -> 3
    assert (out.in_features, out.out_features) == (64, 10)
    dropouts = [m for m in layers if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.3
    assert layers.index(dropouts[0]) > layers.index(dense)  # dropout only in the head


def test_seed_cnn_refuses_tiny_images():
    with pytest.raises(ValueError, match="4x4"):
        make("seed_cnn", (1, 3, 3))


def test_cnn_overfits_one_small_batch(tiny_batch):
    x = torch.from_numpy(tiny_batch.x[::5]).float() / 255.0  # 40 samples, all classes
    y = torch.from_numpy(tiny_batch.labels[::5].astype(np.int64))
    model = make("cnn", (1, 8, 8), channels=[8, 16], dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    first = F.cross_entropy(model(x), y).item()
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = F.cross_entropy(model(x), y).item()

    assert np.isfinite(first) and np.isfinite(last)
    assert last <= first / 2, (first, last)


@pytest.mark.parametrize("arch", sorted(nets.BUILDERS))
def test_save_load_round_trip_gives_identical_outputs(tmp_path, arch):
    in_shape = (1, 8, 8)
    options = {"channels": [8, 16]} if arch == "cnn" else {}
    model = make(arch, in_shape, **options)
    with torch.no_grad():  # non-default BatchNorm statistics must travel too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    card = card_for(arch, in_shape, options)
    save_model(model, card, tmp_path / "m")

    loaded, loaded_card = load_model(tmp_path / "m")

    assert loaded_card == card
    assert not loaded.training
    x = torch.randn(4, *in_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert json.loads((tmp_path / "m" / CARD).read_text()) == card
    assert not list(tmp_path.joinpath("m").glob("*.tmp"))


def test_cnn_first_convolution_strides_on_inputs_of_16_px_and_more():
    def first_conv(model):
        return next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    big, small = make("cnn", (1, 28, 28)), make("cnn", (1, 8, 8))
    assert first_conv(big).stride == (2, 2) and big.stem_stride == 2
    assert first_conv(small).stride == (1, 1) and small.stem_stride == 1
    assert first_conv(make("cnn", (1, 28, 28), stem_stride=1)).stride == (1, 1)
    # the stride costs no accuracy in shape: a 28x28 map still ends in the same head
    with torch.no_grad():
        assert big.features(torch.randn(2, 1, 28, 28)).shape == (2, 128, 3, 3)


def test_a_cnn_card_from_before_stem_stride_rebuilds_the_stride_1_network(tmp_path):
    in_shape, options = (1, 28, 28), {"channels": [8, 16]}
    old = make("cnn", in_shape, stem_stride=1, **options).eval()  # how it was built then
    save_model(old, card_for("cnn", in_shape, options), tmp_path / "m")  # no stem_stride key

    loaded, _ = load_model(tmp_path / "m")

    x = torch.randn(2, *in_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))


def test_train_options_record_the_resolved_stem_stride():
    from evergreen.config import TrainConfig
    from tasks.train.adapt import model_options

    assert model_options(TrainConfig(), (1, 28, 28))["stem_stride"] == 2
    assert model_options(TrainConfig(), (1, 8, 8))["stem_stride"] == 1
    pinned = TrainConfig.model_validate({"cnn": {"stem_stride": 1}})
    assert model_options(pinned, (1, 28, 28))["stem_stride"] == 1


class Payload:
    """Unpickling this creates `marker` (pickle calls open(marker, "w"))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_is_live_when_unpickled(tmp_path):
    """Control for the next test: the payload really does run under a plain unpickle."""
    marker = tmp_path / "ran"
    torch.save({"w": Payload(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_load_refuses_pickled_weights_without_running_them(tmp_path):
    model_dir = tmp_path / "m"
    save_model(make("seed_cnn", (1, 8, 8)), card_for("seed_cnn", (1, 8, 8)), model_dir)
    marker = tmp_path / "pwned"
    torch.save({"features.0.weight": Payload(marker)}, model_dir / WEIGHTS)

    with pytest.raises(BadInputError, match=WEIGHTS):
        load_model(model_dir)
    assert not marker.exists()


def test_load_refuses_a_folder_without_card_or_weights(tmp_path):
    with pytest.raises(BadInputError, match="missing model card"):
        load_model(tmp_path)
    model_dir = tmp_path / "m"
    save_model(make("seed_cnn", (1, 8, 8)), card_for("seed_cnn", (1, 8, 8)), model_dir)
    (model_dir / WEIGHTS).unlink()
    with pytest.raises(BadInputError, match="missing weights"):
        load_model(model_dir)
