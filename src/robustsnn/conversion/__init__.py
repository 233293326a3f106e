"""ANN -> SNN conversion (PAPER.md section 4, step 2).

The recipe and every option are in :mod:`robustsnn.conversion.converter`; this package is its
public face, so ``from robustsnn.conversion import convert, ConversionConfig`` is the import to
use. Converting a checkpoint file (load, calibrate on its dataset, evaluate, save) is a pipeline
stage, :func:`robustsnn.stages.convert_checkpoint`, not part of this package: it reads data and
checkpoints, and checkpoint loading (:mod:`robustsnn.io.models`) itself needs this package.
"""

from robustsnn.conversion.converter import (
    ACTIVATION_LAYERS,
    BN_MODES,
    CORRECTIONS,
    SUPPORTED_LAYERS,
    THRESHOLD_RULES,
    ConversionConfig,
    calibrate_corrections,
    calibrate_thresholds,
    calibrate_thresholds_mse,
    check_convertible,
    convert,
    fold_batchnorm,
    mse_threshold,
    rate_quantiser_mse,
    reestimate_batchnorm,
    spiking_body,
)

__all__ = [
    "ACTIVATION_LAYERS",
    "BN_MODES",
    "CORRECTIONS",
    "SUPPORTED_LAYERS",
    "THRESHOLD_RULES",
    "ConversionConfig",
    "calibrate_corrections",
    "calibrate_thresholds",
    "calibrate_thresholds_mse",
    "check_convertible",
    "convert",
    "fold_batchnorm",
    "mse_threshold",
    "rate_quantiser_mse",
    "reestimate_batchnorm",
    "spiking_body",
]
