"""Record episodes from a robot into the project's one episode format: ``rewardforge-recorder``.

Each control tick while recording, one frame: the observation built from topics (exactly
as the policy node builds it, robot/observation.py; plus camera images), the executed
action (``gate/executed``: what the arm was actually commanded, as a normalised action),
the policy's action (``policy/action``; equal to the executed one when no person took
over), the intervention flag (``intervention``), the reward and success of the reward
monitor (``reward/value``, ``success_topic``). Frames whose inputs are stale are skipped
and counted, never filled in.

Control, as services (std_srvs/Trigger) or as strings on ``recorder/command``
(std_msgs/String: start | stop | success | failure | discard), so a joystick button can
drive it: ``~/start`` begins an episode, ``~/mark_success`` / ``~/mark_failure`` end it
with that label, ``~/stop`` ends it labelled by the last success reading, ``~/discard``
drops it. The writer (common/episodes) makes each finished episode durable before the
next begins: a killed recorder loses at most the episode in progress.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from robot.observation import ObservationAssembler, load_sources, robot_spec, with_cameras
from robot.ros_io import IMAGE_QOS, STATE_QOS, image_array, subscribe_sources, to_sec


class RecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("recorder", **kwargs)
        p = self.declare_parameter
        self.spec = robot_spec(p("embodiment_task", "rewardforge/PandaReach-v0").value, p("embodiment_file", "").value)
        self.root = p("root", "data/robot_episodes").value
        self.task_text = p("task_text", "").value or self.spec.name
        self.source = p("source", "teleop").value  # teleop | policy | intervention | expert | noisy
        self.cameras = [c for c in p("cameras", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, description="camera names; [''] for none")).value if c]
        self.rate = float(p("rate", 0.0).value) or self.spec.control_hz
        self.image_size = int(p("image_size", 84).value)  # must match the camera topics' frames
        obs_map = p("observation_map", "").value
        sources = load_sources(self.spec, yaml.safe_load(Path(obs_map).read_text()) if obs_map else None)
        self.assembler = ObservationAssembler(self.spec, sources, float(p("staleness", 0.25).value),
                                              float(p("max_skew", 0.15).value))
        success_topic = p("success_topic", "reward/success").value

        from common.episodes import DatasetWriter

        self.writer = DatasetWriter(self.root, with_cameras(self.spec, self.cameras, self.image_size), fps=self.rate,
                                    cameras=self.cameras or None)
        subscribe_sources(self, sources, self.assembler)
        self.images: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            self.create_subscription(Image, f"camera/{cam}/image_raw", lambda m, c=cam: self._on_image(m, c), IMAGE_QOS)
        dim = self.spec.action.dim
        self.executed = np.zeros(dim, np.float32)
        self.policy_action: np.ndarray | None = None
        self.intervention = False
        self.reward = 0.0
        self.success = False
        self.create_subscription(Float64MultiArray, "gate/executed", self._on_executed, STATE_QOS)
        self.create_subscription(Float64MultiArray, "policy/action", self._on_policy_action, STATE_QOS)
        self.create_subscription(Bool, "intervention", lambda m: setattr(self, "intervention", bool(m.data)), STATE_QOS)
        self.create_subscription(Float64, "reward/value", lambda m: setattr(self, "reward", float(m.data)), STATE_QOS)
        self.create_subscription(Bool, success_topic, lambda m: setattr(self, "success", bool(m.data)), STATE_QOS)
        self.create_subscription(String, "recorder/command", self._on_command, STATE_QOS)
        for name, fn in (("start", self.start), ("stop", self.stop), ("mark_success", lambda: self.stop(True)),
                         ("mark_failure", lambda: self.stop(False)), ("discard", self.discard)):
            self.create_service(Trigger, f"~/{name}", lambda req, res, fn=fn: self._reply(res, *fn()))
        self.pub_recording = self.create_publisher(Bool, "recorder/recording", STATE_QOS)
        self.frames = 0
        self.skipped = 0
        self.intervention_frames = 0
        self.create_timer(1.0 / self.rate, self._tick)
        if bool(p("auto_start", False).value):
            self.start()
        self.get_logger().info(f"recording {self.spec.name} at {self.rate:g} Hz into {self.root} "
                               f"({self.writer.num_episodes} episodes there)")

    # ---- inputs --------------------------------------------------------------------
    def _on_image(self, msg: Image, cam: str) -> None:
        img = image_array(msg)
        if img.shape != (self.image_size, self.image_size, 3):
            self.get_logger().warning(f"camera {cam} sends {img.shape}, parameter image_size is {self.image_size}",
                                      throttle_duration_sec=5.0)
            return
        self.images[cam] = img

    def _on_executed(self, msg: Float64MultiArray) -> None:
        a = np.asarray(msg.data, np.float32)
        if a.shape == self.executed.shape and np.all(np.isfinite(a)):
            self.executed = np.clip(a, -1.0, 1.0)

    def _on_policy_action(self, msg: Float64MultiArray) -> None:
        a = np.asarray(msg.data, np.float32)
        if a.shape == self.executed.shape and np.all(np.isfinite(a)):
            self.policy_action = np.clip(a, -1.0, 1.0)

    def _on_command(self, msg: String) -> None:
        actions = {"start": self.start, "stop": self.stop, "success": lambda: self.stop(True),
                   "failure": lambda: self.stop(False), "discard": self.discard}
        fn = actions.get(msg.data.strip().lower())
        if fn is None:
            self.get_logger().warning(f"recorder/command {msg.data!r} unknown; use {', '.join(actions)}")
            return
        ok, text = fn()
        # one call site per severity: rclpy refuses a call site whose severity changes between calls
        if ok:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    @staticmethod
    def _reply(res: Trigger.Response, ok: bool, text: str) -> Trigger.Response:
        res.success, res.message = ok, text
        return res

    # ---- episodes ---------------------------------------------------------------------
    def start(self) -> tuple[bool, str]:
        if self.writer.recording:
            return False, "already recording; stop, mark or discard the episode first"
        index = self.writer.begin_episode(self.task_text, source=self.source)
        self.frames = self.skipped = self.intervention_frames = 0
        return True, f"recording episode {index}"

    def stop(self, success: bool | None = None) -> tuple[bool, str]:
        if not self.writer.recording:
            return False, "not recording"
        if self.frames == 0:
            self.writer.discard_episode()
            return False, "episode had no frames; discarded"
        label = self.success if success is None else success
        index = self.writer.end_episode(success=label)
        return True, (f"saved episode {index}: {self.frames} frames, success={label}, "
                      f"{self.intervention_frames} intervention frames, {self.skipped} ticks skipped (stale inputs)")

    def discard(self) -> tuple[bool, str]:
        if not self.writer.recording:
            return False, "not recording"
        self.writer.discard_episode()
        return True, "episode discarded"

    def _tick(self) -> None:
        self.pub_recording.publish(Bool(data=self.writer.recording))
        if not self.writer.recording:
            return
        obs, problems = self.assembler.assemble(to_sec(self.get_clock().now().to_msg()))
        missing = [c for c in self.cameras if c not in self.images]
        if obs is None or missing:
            self.skipped += 1
            self.get_logger().warning("frame skipped: " + "; ".join(problems[:2] or [f"no image from {missing}"]),
                                      throttle_duration_sec=2.0)
            return
        for cam in self.cameras:
            obs[f"image_{cam}"] = self.images[cam]
        policy = self.executed if self.policy_action is None else self.policy_action
        self.writer.add_frame(obs, self.executed, policy_action=policy, intervention=self.intervention,
                              reward=self.reward, success=self.success)
        self.frames += 1
        self.intervention_frames += int(self.intervention)

    def destroy_node(self) -> None:
        if self.writer.recording:  # a clean shutdown keeps the episode, unlabelled success=last reading
            self.stop()
        self.writer.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from robot.nodes import spin

    spin(RecorderNode, args)


if __name__ == "__main__":
    main()
