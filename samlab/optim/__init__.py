"""SAM-family optimizers with a documented closure protocol (docs/closure-protocol.md)."""

from samlab.optim.base import SAMBase, current_pass
from samlab.optim.bsam import BSAM, BSAMUpdate
from samlab.optim.friendlysam import FriendlySAM
from samlab.optim.gsam import GSAM
from samlab.optim.hooks import StepRecorder
from samlab.optim.looksam import LookSAM
from samlab.optim.onestep import OneStepSAM
from samlab.optim.registry import (
    BASE_OPTIMIZERS,
    OptimInfo,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)
from samlab.optim.rho_schedule import (
    CosineRho,
    LinearRho,
    PolynomialRho,
    ProportionalRho,
    RhoSchedule,
)
from samlab.optim.sam import ASAM, SAM
from samlab.optim.ssam import SparseSAM
from samlab.optim.ssamd import SSAMD
from samlab.optim.ssamf import SSAMF
from samlab.optim.wsam import WSAM

__all__ = [
    "ASAM",
    "BASE_OPTIMIZERS",
    "BSAM",
    "BSAMUpdate",
    "FriendlySAM",
    "GSAM",
    "SAM",
    "CosineRho",
    "LinearRho",
    "LookSAM",
    "OneStepSAM",
    "OptimInfo",
    "PolynomialRho",
    "ProportionalRho",
    "RhoSchedule",
    "SAMBase",
    "SSAMD",
    "SSAMF",
    "SparseSAM",
    "StepRecorder",
    "WSAM",
    "create_optimizer",
    "current_pass",
    "get_optimizer_info",
    "list_optimizers",
]
