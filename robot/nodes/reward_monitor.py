"""Reward terms on live robot data: ``rewardforge-reward-monitor``.

Runs the same reward-term objects the training loop uses (``rewards.build`` from the
``configs/reward/<name>.yaml`` group: keypoints, classifier, CLIP, LLM-written programs,
compositions) on observations built from topics exactly as the policy node builds them
(robot/observation.py), plus camera images for image terms. Each control tick forms a
transition (previous observation, executed action from the command gate, current
observation); cheap terms score it at once, batched terms (a vision model) every
``batch_size`` transitions.

Publishes ``reward/value`` (std_msgs/Float64), ``reward/success`` (std_msgs/Bool, the
term's own success verdict, where it has one) and ``reward/diagnostics``
(diagnostic_msgs/DiagnosticArray: the reward-hacking monitor's flags, rewards/monitor.py,
plus the latest reward components as key/values). With ``ground_truth_topic`` (the sim
robot's ``sim/success``) the monitor checks against the task state; on a real robot it
checks the term against its own success detector and its ensemble spread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, Float64MultiArray

from rewards import RewardTerm, Transitions
from rewards.monitor import RewardMonitor
from robot.observation import ObservationAssembler, load_sources, robot_spec, with_cameras
from robot.ros_io import IMAGE_QOS, STATE_QOS, image_array, subscribe_sources, to_sec, to_stamp


def load_reward(name: str, overrides: list[str]) -> tuple[RewardTerm, dict]:
    """The reward term of ``configs/reward/<name>.yaml`` (or a YAML file path), composed with the
    training config so interpolations such as ``${agent.gamma}`` resolve as in training."""
    from omegaconf import OmegaConf

    import rewards
    from policies.config import compose

    if name.endswith((".yaml", ".yml")):
        cfg = compose(list(overrides))
        cfg.reward = OmegaConf.merge(cfg.reward, OmegaConf.load(name))
    else:
        cfg = compose([f"reward={name}", *overrides])
    plain = OmegaConf.to_container(cfg.reward, resolve=True)
    return rewards.build(plain), plain


class RewardMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("reward_monitor", **kwargs)
        p = self.declare_parameter
        self.spec = robot_spec(p("embodiment_task", "rewardforge/PandaReach-v0").value, p("embodiment_file", "").value)
        overrides = [o for o in p("reward_overrides", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY)).value if o]
        self.term, self.reward_cfg = load_reward(p("reward", "keypoints").value, overrides)
        self.term.train_mode(False)  # live data: frozen statistics
        cams = [k.removeprefix("image_") for k in self.term.requires if k.startswith("image_")]
        self.term.bind(with_cameras(self.spec, cams, self.term.render_size or 84))
        self.rate = float(p("rate", 0.0).value) or self.spec.control_hz
        self.batch_size = int(p("batch_size", 1 if not self.term.batched else 16).value)
        obs_map = p("observation_map", "").value
        sources = load_sources(self.spec, yaml.safe_load(Path(obs_map).read_text()) if obs_map else None)
        self.assembler = ObservationAssembler(self.spec, sources, float(p("staleness", 0.25).value),
                                              float(p("max_skew", 0.15).value))
        monitor_params = yaml.safe_load(p("monitor_params", "{}").value) or {}
        self.monitor = RewardMonitor.from_config(monitor_params)
        gt_topic = p("ground_truth_topic", "").value

        subscribe_sources(self, sources, self.assembler)
        self.images: dict[str, tuple[np.ndarray, float]] = {}
        for cam in cams:
            self.create_subscription(Image, f"camera/{cam}/image_raw", lambda m, c=cam: self._on_image(m, c), IMAGE_QOS)
        self.action = np.zeros(self.spec.action.dim, np.float32)
        self.create_subscription(Float64MultiArray, "gate/executed", self._on_action, STATE_QOS)
        self.truth: bool | None = None
        if gt_topic:
            self.create_subscription(Bool, gt_topic, lambda m: setattr(self, "truth", bool(m.data)), STATE_QOS)
        self.pub_reward = self.create_publisher(Float64, "reward/value", STATE_QOS)
        self.pub_success = self.create_publisher(Bool, "reward/success", STATE_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "reward/diagnostics", STATE_QOS)
        self.prev: dict[str, np.ndarray] | None = None
        self.pending: list[tuple[Transitions, bool | None]] = []
        self.scored = 0
        self.create_timer(1.0 / self.rate, self._tick)
        self.get_logger().info(f"reward {self.reward_cfg.get('kind')} ({self.reward_cfg.get('name')}) on "
                               f"{self.spec.name} at {self.rate:g} Hz, batch {self.batch_size}")

    def now(self) -> float:
        return to_sec(self.get_clock().now().to_msg())

    def _on_image(self, msg: Image, cam: str) -> None:
        try:
            self.images[cam] = (image_array(msg), to_sec(msg.header.stamp))
        except ValueError as err:
            self.get_logger().warning(str(err), throttle_duration_sec=2.0)

    def _on_action(self, msg: Float64MultiArray) -> None:
        a = np.asarray(msg.data, np.float32)
        if a.shape == self.action.shape and np.all(np.isfinite(a)):
            self.action = a

    def _tick(self) -> None:
        now = self.now()
        obs, problems = self.assembler.assemble(now)
        if obs is not None:
            for cam, (img, stamp) in self.images.items():
                if now - stamp > self.assembler.staleness * 4:  # cameras run slower than state
                    problems.append(f"camera {cam} image is {now - stamp:.2f} s old")
                obs[f"image_{cam}"] = img
            missing = [k for k in self.term.requires if k not in obs]
            if missing:
                problems.append(f"no data yet for {missing}")
        if problems:
            self.get_logger().warning("not scoring: " + "; ".join(problems[:3]), throttle_duration_sec=2.0)
            return
        if self.prev is not None:
            batch = Transitions(obs={k: v[None] for k, v in self.prev.items()}, action=self.action[None].copy(),
                                next_obs={k: v[None] for k, v in obs.items()})
            self.pending.append((batch, self.truth))
        self.prev = obs
        if len(self.pending) >= self.batch_size:
            self._score()

    def _score(self) -> None:
        parts, truths = zip(*self.pending, strict=True)
        self.pending = []
        out = self.term(Transitions.concat(list(parts)))
        gt = None if any(t is None for t in truths) else np.array(truths, bool)
        self.monitor.update(out, gt)
        self.scored += len(out.reward)
        self.pub_reward.publish(Float64(data=float(out.reward[-1])))
        if out.success is not None:
            self.pub_success.publish(Bool(data=bool(out.success[-1])))
        msg = DiagnosticArray()
        msg.header.stamp = to_stamp(self.now())
        for name, level, text, values in self.monitor.diagnostics():
            msg.status.append(DiagnosticStatus(level=bytes([level]), name=name, message=text, hardware_id="reward",
                                               values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        msg.status.append(DiagnosticStatus(
            level=DiagnosticStatus.OK, name="rewardforge/reward/components", hardware_id="reward",
            message=f"reward {float(out.reward[-1]):.4f}",
            values=[KeyValue(key=k, value=f"{float(v[-1]):.6g}") for k, v in out.components.items()]))
        self.pub_diag.publish(msg)


def main(args: list[str] | None = None) -> None:
    from robot.nodes import spin

    spin(RewardMonitorNode, args)


if __name__ == "__main__":
    main()
