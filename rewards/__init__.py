"""Reward terms: one interface (``rewards.base``), built from Hydra configs by kind.

No ROS imports here: the ROS reward-monitor node runs these same objects.
"""

from rewards.base import (
    Normalize,
    RewardConfigError,
    RewardOutput,
    RewardTerm,
    SparseOverride,
    TaskReward,
    Transitions,
    WeightedSum,
    build,
    known_kinds,
    register,
    relabel,
)

__all__ = [
    "Normalize", "RewardConfigError", "RewardOutput", "RewardTerm", "SparseOverride", "TaskReward",
    "Transitions", "WeightedSum", "build", "known_kinds", "register", "relabel",
]
