"""Test-wide settings: headless rendering, one torch thread, ROS discovery on loopback only."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
# Any ROS node a test starts must stay on this machine (see ../shared/design/MACHINE.md).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))


import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def assert_seeded_replay():
    """Check that ``reset(seed)`` + the same actions replays exactly, and another seed differs.

    Returns the first observation of the seeded episode for further checks."""

    def check(env, seed: int, actions: np.ndarray, key: str = "state", other_seed: int | None = None):
        def rollout(s):
            first, _ = env.reset(seed=s)
            return first, [env.step(u)[0][key] for u in actions]

        a, traj_a = rollout(seed)
        b, traj_b = rollout(seed)
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(np.stack(traj_a), np.stack(traj_b))
        if other_seed is not None:
            assert not np.allclose(a[key], env.reset(seed=other_seed)[0][key])
        return a

    return check
