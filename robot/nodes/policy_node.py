"""The policy on a robot: ``rewardforge-policy``.

Loads a checkpoint, refuses it when its embodiment spec does not match the robot's
(``embodiment_task``: a sim task id whose spec the robot follows, or ``embodiment_file``:
a spec saved as JSON/YAML), builds the observation from topics (robot/observation.py:
each field fresh within ``staleness`` s, all within ``max_skew`` s of each other),
runs the policy at ``control_rate`` and publishes its command to the command gate,
never to the arm: the gate's safety layer stands between the two.

An image policy (a pixel checkpoint, policies/pixels.py) also reads its cameras from
``camera/<camera>/image_raw`` (sensor_msgs/Image, sensor-data QoS; ``observation_map`` may
name other topics), each frame fresh within ``image_staleness`` s; ``cameras`` and
``image_size`` default to the checkpoint's, and a frame of another size is refused.
Image policies run at 10 Hz on the Panda tasks (their control rate).

Publishes ``policy/cmd`` (TwistStamped, m/s: action * action scale * control rate;
stamped with the observation's newest input time), ``policy/gripper`` (Float64),
``policy/action`` (Float64MultiArray, the raw normalised action, for the recorder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, Float64MultiArray

from common.spec import EmbodimentSpec
from robot.observation import ObservationAssembler, load_sources, with_cameras
from robot.ros_io import (
    COMMAND_QOS,
    IMAGE_QOS,
    STATE_QOS,
    image_array,
    subscribe_sources,
    to_sec,
    twist_msg,
)


def robot_spec(task: str, spec_file: str) -> EmbodimentSpec:
    """The spec the robot follows: from a file if given, else from the named sim task."""
    if spec_file:
        text = Path(spec_file).read_text()
        data = json.loads(text) if spec_file.endswith(".json") else yaml.safe_load(text)
        return EmbodimentSpec.from_dict(data)
    if not task:
        raise ValueError("set parameter embodiment_task (a sim task id) or embodiment_file (a spec file)")
    import sim

    env = sim.make(task)
    try:
        return env.unwrapped.embodiment
    finally:
        env.close()


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        p = self.declare_parameter
        ckpt = p("checkpoint", "").value
        if not ckpt:
            raise ValueError("parameter checkpoint is required (a .pt file from rewardforge-train)")
        self.spec = robot_spec(p("embodiment_task", "rewardforge/PandaReach-v0").value, p("embodiment_file", "").value)
        import torch

        from policies import checkpoint
        from policies.policy import Policy

        # One intra-op thread: a conv encoder on more threads than free cores makes OpenMP workers
        # spin and starves this node's message callbacks (measured: commands fell 100+ ms behind).
        torch.set_num_threads(int(p("torch_threads", 1).value))

        state = checkpoint.load(ckpt)
        trained_for = EmbodimentSpec.from_dict(state["embodiment"])
        # Cameras of an image policy: the robot's are named by parameters (default: the checkpoint's).
        cams = [c for c in p("cameras", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, description="cameras; [''] for the checkpoint's")).value if c]
        cams = cams or [f.name.removeprefix("image_") for f in trained_for.image_fields]
        size = int(p("image_size", 0).value) or next((f.shape[0] for f in trained_for.image_fields), 84)
        if cams:
            self.spec = with_cameras(self.spec, cams, size)
        trained_for.require_compatible(self.spec, what=f"checkpoint {ckpt}")  # lists every difference
        self.policy = Policy.from_checkpoint(state)
        self.reads_images = self.policy.encoder is not None
        self.control_rate = float(p("control_rate", 0.0).value) or self.spec.control_hz
        self.deterministic = bool(p("deterministic", True).value)
        obs_map = p("observation_map", "").value
        overrides = yaml.safe_load(Path(obs_map).read_text()) if obs_map else None
        self.sources = load_sources(self.spec, overrides, images=self.reads_images)
        self.assembler = ObservationAssembler(self.spec, self.sources, float(p("staleness", 0.25).value),
                                              float(p("max_skew", 0.15).value),
                                              float(p("image_staleness", 0.3).value))
        self.base_frame = p("base_frame", "base").value
        scale = np.asarray(self.spec.action.scale, float)
        layout = self.spec.action.layout
        self.v_scale = scale[:3] * self.control_rate  # m/s per unit action
        self.yaw_index = layout.index("dyaw") if "dyaw" in layout else None
        self.yaw_scale = scale[self.yaw_index] * self.control_rate if self.yaw_index is not None else 0.0

        self.trigger_topic = p("trigger_topic", "").value
        state_sources = {k: v for k, v in self.sources.items() if all(s.kind != "image" for s in v)}
        topics = subscribe_sources(self, state_sources, self.assembler, self._on_message)
        topics = sorted(topics + self._subscribe_images())
        self.pub_cmd = self.create_publisher(TwistStamped, "policy/cmd", COMMAND_QOS)
        self.pub_grip = self.create_publisher(Float64, "policy/gripper", COMMAND_QOS)
        self.pub_action = self.create_publisher(Float64MultiArray, "policy/action", STATE_QOS)
        # Timer-driven by default. With trigger_topic set, the policy runs when a message arrives
        # there (at most control_rate times a second): the command then follows the newest state
        # by compute + transport time only, not by up to one timer period.
        self.last_run = -1.0
        if self.trigger_topic:
            if self.trigger_topic not in topics:
                raise ValueError(f"trigger_topic {self.trigger_topic!r} is not an input; inputs: {topics}")
        else:
            self.create_timer(1.0 / self.control_rate, self._tick)
        self.latencies: list[float] = []  # seconds from tick start to publish (compute latency)
        self.skipped = 0
        self.get_logger().info(f"{ckpt} on {self.spec.name} at {self.control_rate:g} Hz; inputs: {topics}")

    def _subscribe_images(self) -> list[str]:
        """Camera topics (best-effort sensor QoS, as camera drivers publish) into the assembler."""
        topics = []
        for name, srcs in self.sources.items():
            for i, src in enumerate(srcs):
                if src.kind != "image":
                    continue

                def on_image(msg: Image, name: str = name, i: int = i, topic: str = src.topic) -> None:
                    try:
                        self.assembler.put(name, i, image_array(msg), to_sec(msg.header.stamp))
                    except ValueError as err:  # an encoding we do not read
                        self.get_logger().warning(f"{topic}: {err}", throttle_duration_sec=2.0)
                        return
                    self._on_message(topic)

                self.create_subscription(Image, src.topic, on_image, IMAGE_QOS)
                topics.append(src.topic)
        return topics

    def now(self) -> float:
        return to_sec(self.get_clock().now().to_msg())

    def _on_message(self, topic: str) -> None:
        if topic == self.trigger_topic and time.monotonic() - self.last_run >= 0.95 / self.control_rate:
            self._tick()

    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.last_run = time.monotonic()
        now = self.now()
        obs, problems = self.assembler.assemble(now)
        if obs is None:  # nothing is sent: the gate's watchdog holds the arm
            self.skipped += 1
            self.get_logger().warning("no command: " + "; ".join(problems[:3]), throttle_duration_sec=2.0)
            return
        a = np.clip(self.policy(obs, deterministic=self.deterministic), -1.0, 1.0)
        stamp = max(s for _, s in self.assembler.latest.values())
        yaw_rate = float(a[self.yaw_index] * self.yaw_scale) if self.yaw_index is not None else 0.0
        self.pub_cmd.publish(twist_msg(a[:3] * self.v_scale, np.array([0.0, 0.0, yaw_rate]), self.base_frame, stamp))
        self.pub_grip.publish(Float64(data=float(a[-1])))
        self.pub_action.publish(Float64MultiArray(data=[float(x) for x in a]))
        self.latencies.append(time.perf_counter() - t0)


def main(args: list[str] | None = None) -> None:
    from robot.nodes import spin

    spin(PolicyNode, args)


if __name__ == "__main__":
    main()
