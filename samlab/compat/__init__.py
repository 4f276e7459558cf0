"""Drop-ins for the seed projects' Python APIs: change the import, keep the loop.

=======================================  ==============================================
seed                                     samlab
=======================================  ==============================================
moskomule/sam.pytorch ``from sam import  ``from samlab.compat import SAMSGD``
SAMSGD``
jjsrf/SSAM-NEURIPS2024 (SAM.v2)          ``from samlab.compat.sam_v2 import SAM``
``from sam import SAM``
juntang-zhuang/GSAM ``from gsam import   ``from samlab.compat.gsam import GSAM,
GSAM, LinearScheduler``                  LinearScheduler``
Mi-Peng sparse SAM ``from solver.sam     ``from samlab.compat import SSAMF, SSAMD``
import SSAMF, SSAMD``
davda54/sam ``from sam import SAM``      ``from samlab.optim import SAM`` (same loop)
=======================================  ==============================================

Each submodule's docstring shows the seed's own usage and says where samlab does the correct
thing instead of the seed's bug (docs/migrating.md: what changes in results and why). The
colliding names (``SAM``, ``GSAM``) stay in their submodules; the others are re-exported here.
"""

from samlab.compat.gsam import CosineScheduler, LinearScheduler, ProportionScheduler
from samlab.compat.sam_pytorch import SAMSGD
from samlab.compat.ssam import SSAMD, SSAMF

__all__ = [
    "CosineScheduler",
    "LinearScheduler",
    "ProportionScheduler",
    "SAMSGD",
    "SSAMD",
    "SSAMF",
]
