"""Test-wide settings: headless rendering, one torch thread, ROS discovery on loopback only."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
# Any ROS node a test starts must stay on this machine (see ../shared/design/MACHINE.md).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
