"""Network builders: architecture name -> "module:builder", imported on first use (torch takes
seconds to import, and a no-op run or the registry never needs it)."""

import importlib

BUILDERS = {"seed_cnn": "nets.cnn:build_seed_cnn", "cnn": "nets.cnn:build_cnn", "vit": "nets.vit:build_vit"}


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int, **options):
    """Build `arch` for inputs of shape (C, H, W); options are that arch's config keys."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown model {arch!r}, expected one of {sorted(BUILDERS)}")
    module, name = BUILDERS[arch].split(":")
    return getattr(importlib.import_module(module), name)(in_shape, num_classes, **options)
