"""Network builders: a plain dict from architecture name to builder."""

from nets.cnn import build_cnn, build_seed_cnn
from nets.vit import build_vit

BUILDERS = {"seed_cnn": build_seed_cnn, "cnn": build_cnn, "vit": build_vit}


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int, **options):
    """Build `arch` for inputs of shape (C, H, W); options are that arch's config keys."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown model {arch!r}, expected one of {sorted(BUILDERS)}")
    return BUILDERS[arch](in_shape, num_classes, **options)
