"""A small search space and incumbent shared by the inner-loop and strategy tests."""

from __future__ import annotations

from bilevel.inner.edits import Param

SPACE = {
    "LR": Param("LR", "float", 1e-4, 1e-1),
    "N_LAYER": Param("N_LAYER", "int", 1, 6),
    "TIED": Param("TIED", "bool"),
}
INC = {"LR": 1e-3, "N_LAYER": 2, "TIED": True}
