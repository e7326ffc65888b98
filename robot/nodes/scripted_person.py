"""A scripted stand-in for the person at the SpaceMouse: ``rewardforge-scripted-person``.

Online learning with a human in the loop (HIL-SERL, Luo et al. 2024) needs someone who grabs
the SpaceMouse when the policy heads nowhere and lets go once it is back on track. A person is
the one part of that loop this machine cannot run, so this node plays them in simulation, with
the same rule as the training loop's scripted intervention (sim/intervention.py) but through
the robot's real interfaces: it watches the sim's privileged state, and when the task's
ground-truth progress (``sim/progress``) has not risen by ``min_gain`` within ``patience``
seconds it publishes SpaceMouse ``spacenav/twist`` messages for ``takeover`` seconds, steering
with the task's scripted expert (sim/panda/experts.py) on the observation the policy also reads
(robot/observation.py). The command gate turns that into a takeover (robot/takeover.py: flag,
executed command) exactly as it would for a person. At most ``max_per_episode`` takeovers per
episode, none before ``start_after`` seconds into it, and none in evaluation episodes (``eval_every``
N > 0: sim/episode numbers n with (n + 1) % N == 0, where the policy node, given the same N, acts
with its mean action: the policy alone, measured on the robot).

Axes: the expert's normalised action a moves the arm at a * action_scale * control_hz (m/s);
the gate maps an axis value x to x * human_linear_scale (m/s), so the person sends
x = a * action_scale * control_hz / ``linear_scale`` (set ``linear_scale`` to the gate's
``human_linear_scale``), clipped to the device's [-1, 1]. The gripper goes through the
SpaceMouse's two buttons on ``spacenav/joy`` (sensor_msgs/Joy, as the ROS spacenav driver
publishes them): button ``close_button`` held while the expert closes, ``open_button`` while it
opens, so a takeover on pick-and-place can grasp.

Episode manager (``episode_s`` > 0, by default the task's time limit: max_episode_steps /
control_hz): when an episode has run that long (or, with ``reset_on_success``, once the sim
reports success) it tells the recorder ``stop`` on ``recorder_command`` (so the episode is
labelled by the last success reading), calls the sim robot's ``reset_service`` once the command
gate no longer flags a takeover, then tells the recorder ``start``. The gate keeps the person in
control for its ``release_time`` after their last input, which must not spill into the next
episode (perhaps an evaluation one) nor stretch this one: takeovers end ``release_time`` (set it
to the gate's) before the episode's time is up, and the reset waits for the gate's
``intervention`` flag to clear in case timing slips. Episode starts come from the sim robot's latched
``sim/episode`` (std_msgs/Header) announcement, which the policy node uses to cut transitions.
"""

from __future__ import annotations

import os

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float64, Header, String
from std_srvs.srv import Trigger

from robot.observation import ObservationAssembler, load_sources
from robot.ros_io import COMMAND_QOS, LATCHED_QOS, STATE_QOS, subscribe_sources, to_sec
from sim.intervention import StrayDetector


class ScriptedPersonNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scripted_person", **kwargs)
        p = self.declare_parameter
        task = p("embodiment_task", "rewardforge/PandaReach-v0").value
        self.rate = float(p("rate", 20.0).value)  # Hz: decisions and SpaceMouse messages (gate times out at 0.25 s)
        self.enabled = bool(p("interventions", True).value)
        self.eval_every = int(p("eval_every", 0).value)  # every N-th episode: keep off (the policy node's eval_every)
        self.eval_episode = False
        patience, min_gain = float(p("patience", 1.5).value), float(p("min_gain", 0.02).value)
        self.takeover_s = float(p("takeover", 1.5).value)
        self.max_per_episode = int(p("max_per_episode", 2).value)
        self.start_after = float(p("start_after", 0.0).value)
        self.linear_scale = float(p("linear_scale", 0.15).value)  # the gate's human_linear_scale
        self.yaw_scale = float(p("yaw_scale", 0.8).value)  # the gate's human_yaw_scale
        self.release_s = float(p("release_time", 0.5).value)  # the gate's release_time
        episode_s = float(p("episode_s", 0.0).value)
        self.reset_on_success = bool(p("reset_on_success", False).value)
        reset_service = p("reset_service", "sim_robot/reset").value
        recorder_topic = p("recorder_command", "recorder/command").value
        for key, value in (("rate", self.rate), ("patience", patience), ("takeover", self.takeover_s),
                           ("linear_scale", self.linear_scale)):
            if not value > 0:
                raise ValueError(f"parameter {key}={value}: must be > 0")
        if self.release_s < 0:
            raise ValueError(f"parameter release_time={self.release_s}: must be >= 0")
        if self.max_per_episode < 0 or episode_s < 0:
            raise ValueError(f"parameters max_per_episode={self.max_per_episode} and episode_s={episode_s} must be >= 0")

        import sim
        from sim.panda.experts import make_expert

        self.env = sim.make(task)
        u = self.env.unwrapped
        self.spec = u.embodiment
        self.expert = make_expert(self.env)
        layout = self.spec.action.layout
        self.yaw_index = layout.index("dyaw") if "dyaw" in layout else None
        self.grip_index = layout.index("gripper") if "gripper" in layout else None
        self.close_button, self.open_button = int(p("close_button", 0).value), int(p("open_button", 1).value)
        self.control_hz = float(self.spec.control_hz)
        # m/s per unit action, and rad/s per unit dyaw, as the policy node converts actions
        self.v_per_action = float(u.action_scale) * self.control_hz
        self.yaw_per_action = float(self.spec.action.scale[self.yaw_index]) * self.control_hz if self.yaw_index is not None else 0.0
        limit = self.env.spec.max_episode_steps if self.env.spec is not None else None
        self.episode_s = episode_s or ((limit / self.control_hz) if limit else 0.0)

        self.sources = load_sources(self.spec, None)
        self.assembler = ObservationAssembler(self.spec, self.sources, float(p("staleness", 0.25).value),
                                              float(p("max_skew", 0.15).value))
        subscribe_sources(self, self.sources, self.assembler)
        self.progress, self.success = 0.0, False
        self.create_subscription(Float64, p("progress_topic", "sim/progress").value,
                                 lambda m: setattr(self, "progress", float(m.data)), STATE_QOS)
        self.create_subscription(Bool, p("success_topic", "sim/success").value,
                                 lambda m: setattr(self, "success", bool(m.data)), STATE_QOS)
        self.create_subscription(Header, p("episode_topic", "sim/episode").value, self._on_episode, LATCHED_QOS)
        self.gate_intervening = False  # the command gate's flag: the person still holds the arm
        self.create_subscription(Bool, p("intervention_topic", "intervention").value,
                                 lambda m: setattr(self, "gate_intervening", bool(m.data)), STATE_QOS)
        self.pub_twist = self.create_publisher(Twist, "spacenav/twist", COMMAND_QOS)
        self.pub_buttons = self.create_publisher(Joy, "spacenav/joy", COMMAND_QOS)
        self.pub_recorder = self.create_publisher(String, recorder_topic, STATE_QOS) if recorder_topic else None
        self.reset_client = self.create_client(Trigger, reset_service) if self.episode_s > 0 else None

        self.stray = StrayDetector(patience, min_gain)
        self.episode_start: float | None = None  # stamp of the current episode's start (sim/episode)
        self.takeover_until = -np.inf
        self.count = 0  # takeovers this episode
        self.takeovers = 0  # in total
        # run -> stopping (recorder told "stop") -> resetting (service called) -> waiting (for the new
        # episode's announcement; then the recorder is told "start") -> run
        self.phase = "run"
        self.reset_from: float | None = None
        self.create_timer(1.0 / self.rate, self._tick)
        self.get_logger().info(
            f"scripted person on {task}: takes over after {patience:g} s without {min_gain:g} progress, for "
            f"{self.takeover_s:g} s, at most {self.max_per_episode} per episode; "
            + (f"resets every {self.episode_s:g} s via {reset_service}" if self.reset_client else "no episode resets"))

    def now(self) -> float:
        return to_sec(self.get_clock().now().to_msg())

    def _on_episode(self, msg: Header) -> None:
        start = to_sec(msg.stamp)
        if self.episode_start is not None and start <= self.episode_start:
            return
        self.episode_start = start
        try:
            number = int(msg.frame_id)
        except ValueError:
            number = None
        self.eval_episode = self.eval_every > 0 and number is not None and (number + 1) % self.eval_every == 0
        self.count, self.takeover_until = 0, -np.inf
        self.stray.clear()
        if hasattr(self.expert, "reset"):
            self.expert.reset()

    def _axes(self, action: np.ndarray) -> np.ndarray:
        axes = np.zeros(6)
        axes[:3] = action[:3] * self.v_per_action / self.linear_scale
        if self.yaw_index is not None:
            axes[5] = action[self.yaw_index] * self.yaw_per_action / self.yaw_scale
        return np.clip(axes, -1.0, 1.0)

    def _tick(self) -> None:
        now = self.now()
        if self.episode_start is None:
            return  # the sim robot has not announced an episode yet
        if self.reset_client is not None and self._manage_episode(now):
            return
        if not self.enabled or self.eval_episode:
            return
        obs, _ = self.assembler.assemble(now)
        if now < self.takeover_until:
            if obs is not None:
                a = np.asarray(self.expert(obs), float)
                x = self._axes(a)
                self.pub_twist.publish(Twist(linear=_vec(x[:3]), angular=_vec(x[3:])))
                if self.grip_index is not None:
                    buttons = [0] * (max(self.close_button, self.open_button) + 1)
                    buttons[self.close_button if a[self.grip_index] < 0 else self.open_button] = 1
                    self.pub_buttons.publish(Joy(axes=[float(v) for v in x], buttons=buttons))
            return
        if self.takeover_until > -np.inf:  # just let go: judge the policy afresh
            self.takeover_until = -np.inf
            self.stray.clear()
        stuck = self.stray.update(now, self.progress, self.success)
        until = now + self.takeover_s
        if self.reset_client is not None:  # let go early enough for the gate to release by the episode's end
            until = min(until, self.episode_start + self.episode_s - self.release_s)
        if (stuck and obs is not None and self.count < self.max_per_episode and until > now
                and now - self.episode_start >= self.start_after):
            self.count += 1
            self.takeovers += 1
            self.takeover_until = until
            if hasattr(self.expert, "reset"):
                self.expert.reset()  # plan from where the arm is now
            self.get_logger().info(f"taking over ({self.count}/{self.max_per_episode} this episode): "
                                   f"progress {self.progress:.2f} stalled")

    def _manage_episode(self, now: float) -> bool:
        """The episode manager's state machine; True while a reset is under way (no takeover then)."""
        if self.phase == "waiting":  # reset done; the new episode's announcement not seen yet
            if self.episode_start == self.reset_from:
                return True
            self._recorder("start")
            self.phase = "run"
        if self.phase == "run":
            age = now - self.episode_start
            # (success: not in the first 0.5 s, whose reading may still be the last episode's)
            over = age >= self.episode_s or (self.reset_on_success and self.success and age > 0.5)
            if not over:
                return False
            if not self.reset_client.service_is_ready():
                self.get_logger().warning("waiting for the reset service", throttle_duration_sec=5.0)
                return False
            self._recorder("stop")
            self.reset_from = self.episode_start
            self.takeover_until = -np.inf
            self.phase = "stopping"
            return True
        if self.phase == "stopping":  # a tick after "stop": the recorder has closed the episode
            if self.gate_intervening:  # the gate still holds the takeover (its release time)
                return True
            self.phase = "resetting"
            self.reset_client.call_async(Trigger.Request()).add_done_callback(self._on_reset_done)
        return True

    def _on_reset_done(self, future) -> None:
        ok = future.exception() is None and future.result().success
        if not ok:
            self.get_logger().error(f"reset failed: {future.exception() or future.result().message}")
            self._recorder("start")
            self.phase = "run"
            return
        self.phase = "waiting"

    def _recorder(self, command: str) -> None:
        if self.pub_recorder is not None:
            self.pub_recorder.publish(String(data=command))

    def destroy_node(self) -> None:
        self.env.close()
        super().destroy_node()


def _vec(v: np.ndarray):
    from geometry_msgs.msg import Vector3

    return Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def main(args: list[str] | None = None) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robot.nodes import spin

    spin(ScriptedPersonNode, args)


if __name__ == "__main__":
    main()
