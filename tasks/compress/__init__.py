"""Compress: variants of the teacher (pruned, distilled, int8), measured, one selected by budget.

The variants come from a plain dict of builders (variants.py); each returns Variant objects
(variant.py). int8 copies of the named variants follow (quantize.py). Every variant is exported
to ONNX and measured there, the runtime it is served from (measure.py), and the best within the
budget is selected (select.py). Pruning is prune.py, the students students.py.
"""

from tasks.compress.measure import measure_variants, save_variant
from tasks.compress.prune import (
    auto_prune_ratio,
    conv_channels,
    prune_channels,
    pruned_widths,
    resolve_prune,
    weight_count,
)
from tasks.compress.quantize import (
    calibration_batch,
    has_vnni,
    int8_variant,
    quantize_int8,
    quiet_torchao_import,
    resolve_reduce_range,
)
from tasks.compress.select import building_stops, distillation_gain, select_variant
from tasks.compress.students import (
    distill,
    distillation_loss,
    student_arch,
    student_epochs,
    student_settings,
    train_student,
)
from tasks.compress.variant import Inputs, NotApplicable, Variant
from tasks.compress.variants import (
    build_rounds,
    build_variants,
    int8_sources,
    planned_names,
    pruned_name,
)

__all__ = [
    "Inputs", "NotApplicable", "Variant", "auto_prune_ratio", "build_rounds", "build_variants",
    "building_stops", "calibration_batch", "conv_channels", "distill", "distillation_gain",
    "distillation_loss", "has_vnni", "int8_sources", "int8_variant", "measure_variants",
    "planned_names", "prune_channels", "pruned_name", "pruned_widths", "quantize_int8",
    "quiet_torchao_import", "resolve_prune", "resolve_reduce_range", "save_variant",
    "select_variant", "student_arch", "student_epochs", "student_settings", "train_student",
    "weight_count",
]
