"""Human takeover: a person's SpaceMouse or gamepad replaces the policy's command.

Pure Python (no rclpy); the command-gate node feeds it ``spacenav/twist`` or ``joy``
messages and the policy's commands, and sends the mix through the safety layer.

As in HIL-SERL, the person is "intervening" while their input is above a deadband
(HIL-SERL: SpaceMouse norm > 0.001 or a gripper button). Then the human command
replaces the policy's, blended in over ``blend_time`` seconds so the arm does not jerk
(weight w ramps 0 -> 1; command = w * human + (1 - w) * policy), and after the person
lets go it stays theirs for ``release_time`` seconds (holding still), then blends back
to the policy. Every tick reports the flag, so every correction can be recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot.safety import CartesianCommand


@dataclass
class TakeoverConfig:
    deadband: float = 0.05  # |axis| (normalised, [-1, 1]) below which the input counts as released
    linear_scale: float = 0.15  # m/s for a full-scale axis
    yaw_scale: float = 0.8  # rad/s for a full-scale yaw axis
    blend_time: float = 0.05  # s to hand over fully (shorter than one 10-20 Hz control period)
    release_time: float = 0.5  # s the human keeps control after letting go
    input_timeout: float = 0.25  # s: a human message older than this counts as released


@dataclass
class HumanInput:
    axes: np.ndarray  # (6,) normalised [-1, 1]: x, y, z, roll, pitch, yaw (SpaceMouse order)
    gripper: float | None = None  # -1 close / +1 open when a button is pressed, else None
    stamp: float = 0.0


class TakeoverMux:
    def __init__(self, cfg: TakeoverConfig | None = None) -> None:
        self.cfg = cfg or TakeoverConfig()
        self.human: HumanInput | None = None
        self.weight = 0.0  # 0: policy, 1: human
        self.last_active: float = -np.inf
        self.last_time: float | None = None
        self.gripper = 1.0
        self.interventions = 0  # count of takeovers started

    def human_input(self, axes: np.ndarray, gripper: float | None, stamp: float) -> None:
        a = np.asarray(axes, float).reshape(-1)
        if a.shape != (6,) or not np.all(np.isfinite(a)):
            return  # malformed or NaN input is ignored, so it cannot steer the arm
        self.human = HumanInput(np.clip(a, -1.0, 1.0), gripper, float(stamp))

    def active(self, now: float) -> bool:
        """Is the person touching the device right now (above the deadband, fresh)?"""
        h = self.human
        if h is None or now - h.stamp > self.cfg.input_timeout:
            return False
        return bool(np.max(np.abs(h.axes)) > self.cfg.deadband or h.gripper is not None)

    def mix(self, policy: CartesianCommand | None, now: float) -> tuple[CartesianCommand | None, bool]:
        """The command to pass on at ``now`` and the intervention flag.

        Call at the gate's rate (e.g. 100 Hz): the weight moves by ``dt / blend_time`` per call.
        """
        cfg = self.cfg
        dt = 0.0 if self.last_time is None else max(0.0, now - self.last_time)
        self.last_time = now
        touching = self.active(now)
        if touching:
            if self.weight == 0.0:
                self.interventions += 1  # a new takeover begins
            self.last_active = now
        in_control = now - self.last_active <= cfg.release_time
        step = np.inf if cfg.blend_time <= 0 else dt / cfg.blend_time
        self.weight = float(np.clip(self.weight + (step if in_control else -step), 0.0, 1.0))
        if not (in_control or self.weight > 0.0):
            if policy is not None:
                self.gripper = float(policy.gripper)
            return policy, False

        human_lin, human_yaw = np.zeros(3), 0.0  # after letting go: hold still
        h = self.human
        if touching and h is not None:
            axes = np.where(np.abs(h.axes) > cfg.deadband, h.axes, 0.0)
            human_lin, human_yaw = axes[:3] * cfg.linear_scale, float(axes[5]) * cfg.yaw_scale
            if h.gripper is not None:
                self.gripper = float(np.clip(h.gripper, -1.0, 1.0))
        w = self.weight
        pol_lin = np.zeros(3) if policy is None else np.asarray(policy.linear, float)
        pol_yaw = 0.0 if policy is None else float(policy.yaw_rate)
        cmd = CartesianCommand(w * human_lin + (1 - w) * pol_lin, w * human_yaw + (1 - w) * pol_yaw,
                               self.gripper, now)
        return cmd, True
