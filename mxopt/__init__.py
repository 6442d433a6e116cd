"""mxopt: MXNet 1.9.1's optimizers as pure JAX/Optax gradient transformations."""
from mxopt import interop, lr_scheduler, multipliers, precision, reference, transforms
from mxopt.alias import CenteredRMSPropState, RMSPropState, rmsprop, rmsprop_chain
from mxopt.facade import Optimizer, RMSProp, Updater, create, get_updater, register
from mxopt.precision import MasterWeightsState, master_weights
from mxopt.transforms import (
    GravesMomentumState,
    ScaleByCenteredRmsState,
    ScaleByLearningRateState,
    ScaleByRmsState,
    add_weight_decay,
    clip_gradient,
    clip_weights,
    graves_momentum,
    rescale_gradient,
    scale_by_centered_rms,
    scale_by_learning_rate,
    scale_by_lr_mult,
    scale_by_rms,
)

# isort: split
# Adam, Adamax, Nadam, Ftrl, FTML
from mxopt.alias import (
    AdamaxState,
    AdamState,
    FTMLState,
    FtrlState,
    NadamState,
    adam,
    adamax,
    ftml,
    ftrl,
    nadam,
)
from mxopt.facade import FTML, Adam, Adamax, Ftrl, Nadam

__version__ = "0.1.0"

__all__ = [
    "Optimizer",
    "RMSProp",
    "Updater",
    "create",
    "register",
    "get_updater",
    "rmsprop",
    "rmsprop_chain",
    "master_weights",
    "MasterWeightsState",
    "multipliers",
    "lr_scheduler",
    "interop",
    "precision",
    "RMSPropState",
    "CenteredRMSPropState",
    "transforms",
    "reference",
    "rescale_gradient",
    "add_weight_decay",
    "clip_gradient",
    "scale_by_rms",
    "ScaleByRmsState",
    "scale_by_centered_rms",
    "ScaleByCenteredRmsState",
    "scale_by_learning_rate",
    "ScaleByLearningRateState",
    "graves_momentum",
    "GravesMomentumState",
    "clip_weights",
    "scale_by_lr_mult",
    # Adam, Adamax, Nadam, Ftrl, FTML
    "Adam",
    "AdamState",
    "Adamax",
    "AdamaxState",
    "FTML",
    "FTMLState",
    "Ftrl",
    "FtrlState",
    "Nadam",
    "NadamState",
    "adam",
    "adamax",
    "ftml",
    "ftrl",
    "nadam",
]
