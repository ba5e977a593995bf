"""Teaching: derive, explain, graph and train, the back-propagation lesson as commands.

Each verb returns data (a dataclass with ``to_dict()``); the CLI renders it.
Nothing here imports torch or SymPy at import time.
"""

from __future__ import annotations

from .derive import Derivation, derive
from .explain import Explanation, explain
from .graph import GraphResult, graph
from .train import TrainResult, train

__all__ = ["derive", "explain", "graph", "train", "Derivation", "Explanation", "GraphResult", "TrainResult"]
