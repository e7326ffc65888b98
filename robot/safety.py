"""The safety layer: every Cartesian command passes through here before the arm sees it.

Pure Python (no rclpy), so the same checks are unit-tested here and run inside the
command-gate node (robot/nodes/command_gate.py), which is the only node that talks to
the robot's command topic: a policy cannot bypass it.

Per command, in this order:
1. **E-stop**: latched by :meth:`SafetyLayer.estop`, cleared only by :meth:`reset_estop`
   (and only once the estop input itself has been released). While latched: zero velocity.
2. **Watchdog**: if the arm's state (end-effector pose) or the command is older than its
   timeout, hold (zero velocity). A real arm must never keep moving on a stale command.
3. **NaN/inf rejection**: a non-finite command is refused (zero velocity) and counted.
4. **Speed limit**: the linear velocity is scaled down to ``max_speed`` (direction kept),
   the yaw rate clipped to ``max_yaw_rate``.
5. **Acceleration limit**: the change from the previous output is limited to
   ``max_accel * dt`` (stopping for 1-3 is immediate, not ramped).
6. **Workspace box**: per axis, the velocity is reduced so that the end effector,
   extrapolated ``lookahead`` seconds ahead, stays inside the box; outside the box only
   motion back towards it is allowed. Clipping comes last so no later step can undo it.

MoveIt Servo limits joint speeds, singularities and collisions but knows no Cartesian
workspace box; that is this layer's job (REFERENCES.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyLimits:
    workspace_low: tuple[float, float, float]  # m, robot base frame
    workspace_high: tuple[float, float, float]
    max_speed: float = 0.25  # m/s, end-effector linear speed
    max_yaw_rate: float = 1.0  # rad/s
    max_accel: float = 2.0  # m/s^2
    state_timeout: float = 0.2  # s: older end-effector state -> hold
    command_timeout: float = 0.3  # s: no fresh command -> hold
    # s: how far ahead the workspace check extrapolates. It also covers the arm lagging its
    # command (measured: 0.1 s let the sim Panda overshoot the wall by 1.8 cm at 0.3 m/s).
    lookahead: float = 0.25

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_low, float), np.asarray(self.workspace_high, float)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"workspace box must be two 3-vectors with low < high, got {lo} .. {hi}")
        for name in ("max_speed", "max_yaw_rate", "max_accel", "state_timeout", "command_timeout", "lookahead"):
            if not getattr(self, name) > 0:
                raise ValueError(f"safety limit {name} must be > 0, got {getattr(self, name)}")


@dataclass
class CartesianCommand:
    """End-effector velocity command: linear (3,) m/s in the base frame, yaw rate rad/s, gripper in
    [-1 closed, 1 open]. ``stamp``: when it was issued (s, the gate's clock)."""

    linear: np.ndarray
    yaw_rate: float = 0.0
    gripper: float = 1.0
    stamp: float = 0.0

    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.linear)) and np.isfinite(self.yaw_rate) and np.isfinite(self.gripper))


@dataclass
class SafetyStatus:
    """What the layer did to the last command: ``held`` (zero output) and why, what was clipped."""

    held: bool = False
    reasons: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)


class SafetyLayer:
    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.low = np.asarray(limits.workspace_low, float)
        self.high = np.asarray(limits.workspace_high, float)
        self.ee_pos: np.ndarray | None = None
        self.state_stamp = -np.inf
        self.estopped = False
        self._estop_input = False
        self.last = np.zeros(3)  # last linear velocity sent
        self.last_yaw_rate = 0.0
        self.last_time: float | None = None
        self.gripper = 1.0  # kept through holds (an e-stop must not drop what the arm holds)
        self.rejected_nonfinite = 0
        self.status = SafetyStatus()

    # ---- inputs -------------------------------------------------------------
    def update_state(self, ee_pos: np.ndarray, stamp: float) -> bool:
        """The arm's measured end-effector position. Non-finite state is ignored (returns False),
        so the watchdog holds the arm once the last good state grows stale."""
        p = np.asarray(ee_pos, float).reshape(3)
        if not np.all(np.isfinite(p)):
            return False
        self.ee_pos, self.state_stamp = p, float(stamp)
        return True

    def estop(self, pressed: bool = True) -> None:
        """E-stop input. Pressing latches; releasing the input does not un-latch (see reset_estop)."""
        self._estop_input = bool(pressed)
        if pressed:
            self.estopped = True

    def reset_estop(self) -> tuple[bool, str]:
        if self._estop_input:
            return False, "e-stop input is still pressed; release it first"
        self.estopped = False
        return True, "e-stop reset"

    # ---- the filter -----------------------------------------------------------
    def filter(self, cmd: CartesianCommand | None, now: float) -> tuple[CartesianCommand, SafetyStatus]:
        """The command to send at time ``now`` (s) given the latest requested ``cmd`` (None: none yet)."""
        lim = self.limits
        status = SafetyStatus()
        if self.estopped:
            status.reasons.append("e-stop latched")
        if self.ee_pos is None or now - self.state_stamp > lim.state_timeout:
            status.reasons.append("arm state stale" if self.ee_pos is not None else "no arm state yet")
        if cmd is None or now - cmd.stamp > lim.command_timeout:
            status.reasons.append("command stale" if cmd is not None else "no command yet")
        elif not cmd.finite():
            self.rejected_nonfinite += 1
            status.reasons.append("non-finite command refused")
        if status.reasons:
            return self._hold(now, status)

        assert cmd is not None and self.ee_pos is not None
        v = np.asarray(cmd.linear, float).reshape(3).copy()
        speed = float(np.linalg.norm(v))
        if speed > lim.max_speed:
            v *= lim.max_speed / speed
            status.clipped.append("speed")
        yaw_rate = float(np.clip(cmd.yaw_rate, -lim.max_yaw_rate, lim.max_yaw_rate))
        if yaw_rate != cmd.yaw_rate:
            status.clipped.append("yaw rate")

        dt = 0.0 if self.last_time is None else max(0.0, now - self.last_time)
        max_dv = lim.max_accel * max(dt, 1e-3)
        dv = v - self.last
        if np.linalg.norm(dv) > max_dv:
            v = self.last + dv * (max_dv / np.linalg.norm(dv))
            status.clipped.append("acceleration")

        # Workspace: p + v * lookahead must stay inside [low, high] on every axis.
        room_up = (self.high - self.ee_pos) / lim.lookahead  # max allowed +velocity per axis
        room_down = (self.low - self.ee_pos) / lim.lookahead  # min allowed (negative) velocity
        v_box = np.clip(v, np.minimum(room_down, 0.0), np.maximum(room_up, 0.0))
        if not np.allclose(v_box, v):
            status.clipped.append("workspace")
        v = v_box

        self.gripper = float(np.clip(cmd.gripper, -1.0, 1.0))
        self.last, self.last_yaw_rate, self.last_time = v, yaw_rate, now
        self.status = status
        return CartesianCommand(v, yaw_rate, self.gripper, now), status

    def _hold(self, now: float, status: SafetyStatus) -> tuple[CartesianCommand, SafetyStatus]:
        status.held = True
        self.last, self.last_yaw_rate, self.last_time = np.zeros(3), 0.0, now
        self.status = status
        return CartesianCommand(np.zeros(3), 0.0, self.gripper, now), status
