"""The command gate: the one node that commands the arm. ``rewardforge-command-gate``.

Every command source (the policy node, a person on a SpaceMouse or gamepad) publishes
to the gate; the gate mixes them (robot/takeover.py), passes the result through the
safety layer (robot/safety.py) and publishes it to the arm at ``rate`` Hz, a steady
stream as MoveIt Servo expects. Only the gate publishes on the arm's command topic, so
a policy cannot bypass the safety layer.

Subscribes  ``policy/cmd`` (TwistStamped, m/s), ``policy/gripper`` (Float64 in [-1, 1]),
            ``spacenav/twist`` (Twist, axes about [-1, 1]) with ``spacenav/joy`` (Joy: the
            SpaceMouse's buttons close / open the gripper, as in HIL-SERL), or ``joy`` (Joy),
            ``estop`` (Bool, latched), ``ee_pose`` (PoseStamped: the arm's state, for the box and
            the watchdog).
Publishes   ``servo/delta_twist_cmds`` (TwistStamped), ``gripper/command`` (Float64),
            ``intervention`` (Bool, every tick), ``gate/executed`` (Float64MultiArray: the
            executed command as a normalised action in the embodiment's action layout, for the
            recorder and the online learner), ``safety/status``
            (diagnostic_msgs/DiagnosticArray, 2 Hz).
Services    ``~/reset_estop`` (std_srvs/Trigger).
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger

from robot.observation import robot_spec
from robot.ros_io import COMMAND_QOS, LATCHED_QOS, STATE_QOS, to_sec, to_stamp, twist_msg
from robot.safety import CartesianCommand, SafetyLayer, SafetyLimits
from robot.takeover import TakeoverConfig, TakeoverMux
from sim.panda.base import DEFAULT_WORKSPACE_HIGH, DEFAULT_WORKSPACE_LOW

# The sim Panda's box by default; a real arm sets its own in the params file.
DEFAULT_LOW, DEFAULT_HIGH = list(DEFAULT_WORKSPACE_LOW), list(DEFAULT_WORKSPACE_HIGH)


class CommandGateNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("command_gate", **kwargs)
        p = self.declare_parameter
        self.rate = float(p("rate", 100.0).value)
        self.limits = SafetyLimits(
            tuple(p("workspace_low", DEFAULT_LOW).value), tuple(p("workspace_high", DEFAULT_HIGH).value),
            max_speed=float(p("max_speed", 0.25).value), max_yaw_rate=float(p("max_yaw_rate", 1.0).value),
            max_accel=float(p("max_accel", 2.0).value), state_timeout=float(p("state_timeout", 0.2).value),
            command_timeout=float(p("command_timeout", 0.3).value), lookahead=float(p("lookahead", 0.25).value))
        self.takeover_cfg = TakeoverConfig(
            deadband=float(p("deadband", 0.05).value), linear_scale=float(p("human_linear_scale", 0.15).value),
            yaw_scale=float(p("human_yaw_scale", 0.8).value), blend_time=float(p("blend_time", 0.05).value),
            release_time=float(p("release_time", 0.5).value), input_timeout=float(p("human_timeout", 0.25).value))
        self.human_input = p("human_input", "spacenav").value  # spacenav | joy | none
        self.joy_axes = list(p("joy_axes", [0, 1, 2, 3, 4, 5]).value)  # Joy axis index for x y z roll pitch yaw
        self.joy_close, self.joy_open = int(p("joy_close_button", 0).value), int(p("joy_open_button", 1).value)
        self.nav_close, self.nav_open = (int(p("spacenav_close_button", 0).value),
                                         int(p("spacenav_open_button", 1).value))
        # Normalised action <-> velocity, for gate/executed: v = a * scale * control rate, per entry of
        # the action layout. With ``embodiment_task`` set, layout, scales and rate are the embodiment's
        # (a task with yaw gets its dyaw entry); otherwise (dx, dy, dz, gripper) at action_scale, control_hz.
        self.action_scale = float(p("action_scale", 0.05).value)
        self.control_hz = float(p("control_hz", 10.0).value)
        embodiment, spec_file = p("embodiment_task", "").value, p("embodiment_file", "").value
        if embodiment or spec_file:
            spec = robot_spec(embodiment, spec_file)
            self.exec_layout = tuple(spec.action.layout)
            self.exec_scale = tuple(s * spec.control_hz for s in spec.action.scale)
        else:
            self.exec_layout = ("dx", "dy", "dz", "gripper")
            self.exec_scale = (self.action_scale * self.control_hz,) * 3 + (1.0,)
        unknown = [n for n in self.exec_layout if n not in ("dx", "dy", "dz", "dyaw", "gripper")]
        if unknown:
            raise ValueError(f"embodiment {embodiment or spec_file!r} has action entries {unknown} the gate cannot report "
                             "(it commands dx, dy, dz, dyaw and gripper)")
        self.base_frame = p("base_frame", "base").value
        out_topic = p("servo_topic", "servo/delta_twist_cmds").value
        grip_topic = p("gripper_topic", "gripper/command").value
        if self.human_input not in ("spacenav", "joy", "none"):
            raise ValueError(f"parameter human_input={self.human_input!r}; allowed: spacenav, joy, none")

        self.safety = SafetyLayer(self.limits)
        self.mux = TakeoverMux(self.takeover_cfg)
        self.policy_cmd: CartesianCommand | None = None
        self.policy_gripper = 1.0
        self.nav_axes: tuple[np.ndarray, float] | None = None  # last SpaceMouse axes and when
        self.nav_grip: float | None = None  # SpaceMouse gripper button held: -1 close, +1 open
        self.held_ticks = 0
        self.ticks = 0

        sub = self.create_subscription
        sub(TwistStamped, "policy/cmd", self._on_policy, COMMAND_QOS)
        sub(Float64, "policy/gripper", self._on_policy_gripper, COMMAND_QOS)
        sub(Bool, "estop", self._on_estop, LATCHED_QOS)
        sub(PoseStamped, "ee_pose", self._on_pose, STATE_QOS)
        if self.human_input == "spacenav":
            sub(Twist, "spacenav/twist", self._on_spacenav, COMMAND_QOS)
            sub(Joy, "spacenav/joy", self._on_spacenav_buttons, COMMAND_QOS)
        elif self.human_input == "joy":
            sub(Joy, "joy", self._on_joy, COMMAND_QOS)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        pub = self.create_publisher
        self.pub_cmd = pub(TwistStamped, out_topic, COMMAND_QOS)
        self.pub_grip = pub(Float64, grip_topic, COMMAND_QOS)
        self.pub_flag = pub(Bool, "intervention", STATE_QOS)
        self.pub_exec = pub(Float64MultiArray, "gate/executed", STATE_QOS)
        self.pub_status = pub(DiagnosticArray, "safety/status", STATE_QOS)
        self.create_timer(1.0 / self.rate, self._tick)
        self.create_timer(0.5, self._publish_status)

    def now(self) -> float:
        return to_sec(self.get_clock().now().to_msg())

    # ---- inputs ------------------------------------------------------------------
    def _on_policy(self, msg: TwistStamped) -> None:
        t = msg.twist
        # Stamped with the gate's receive time: the policy's stamp is its observation's time.
        self.policy_cmd = CartesianCommand(np.array([t.linear.x, t.linear.y, t.linear.z]), float(t.angular.z),
                                           self.policy_gripper, self.now())

    def _on_policy_gripper(self, msg: Float64) -> None:
        self.policy_gripper = float(msg.data)
        if self.policy_cmd is not None:
            self.policy_cmd.gripper = self.policy_gripper

    def _on_estop(self, msg: Bool) -> None:
        self.safety.estop(bool(msg.data))
        if msg.data:
            self.get_logger().warning("E-STOP pressed: holding the arm until ~/reset_estop")
            self._tick()  # stop now, not at the next tick

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.safety.reset_estop()
        return response

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.safety.update_state(np.array([p.x, p.y, p.z]), to_sec(msg.header.stamp))

    def _on_spacenav(self, msg: Twist) -> None:
        axes = np.array([msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z])
        now = self.now()
        self.nav_axes = (axes, now)
        self.mux.human_input(axes, self.nav_grip, now)

    def _on_spacenav_buttons(self, msg: Joy) -> None:
        """The spacenav driver's ``spacenav/joy`` (its axes repeat the twist; only buttons are read):
        a held button closes / opens the gripper and, like moving the cap, counts as taking over."""
        b = list(msg.buttons)
        close = len(b) > self.nav_close and bool(b[self.nav_close])
        opening = len(b) > self.nav_open and bool(b[self.nav_open])
        self.nav_grip = -1.0 if close else (1.0 if opening else None)
        now = self.now()
        fresh = self.nav_axes is not None and now - self.nav_axes[1] <= self.takeover_cfg.input_timeout
        self.mux.human_input(self.nav_axes[0] if fresh else np.zeros(6), self.nav_grip, now)

    def _on_joy(self, msg: Joy) -> None:
        try:
            axes = np.array([msg.axes[i] for i in self.joy_axes])
        except IndexError:
            self.get_logger().warning(f"joy message has {len(msg.axes)} axes; joy_axes wants {self.joy_axes}",
                                      throttle_duration_sec=2.0)
            return
        buttons = list(msg.buttons)
        grip = None
        if len(buttons) > max(self.joy_close, self.joy_open):
            grip = -1.0 if buttons[self.joy_close] else (1.0 if buttons[self.joy_open] else None)
        self.mux.human_input(axes, grip, self.now())

    # ---- the gate ------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.now()
        mixed, intervening = self.mux.mix(self.policy_cmd, now)
        if intervening and mixed is not None:
            mixed.stamp = now  # a person's command is fresh by construction
        out, status = self.safety.filter(mixed, now)
        self.ticks += 1
        self.held_ticks += int(status.held)
        self.pub_cmd.publish(twist_msg(out.linear, np.array([0.0, 0.0, out.yaw_rate]), self.base_frame, now))
        self.pub_grip.publish(Float64(data=float(out.gripper)))
        self.pub_flag.publish(Bool(data=bool(intervening)))
        value = {"dx": out.linear[0], "dy": out.linear[1], "dz": out.linear[2], "dyaw": out.yaw_rate,
                 "gripper": out.gripper}
        pairs = zip(self.exec_layout, self.exec_scale, strict=True)
        self.pub_exec.publish(Float64MultiArray(data=[float(value[n]) / (1.0 if n == "gripper" else k) for n, k in pairs]))

    def _publish_status(self) -> None:
        s = self.safety.status
        level = DiagnosticStatus.ERROR if self.safety.estopped else (
            DiagnosticStatus.WARN if s.held else DiagnosticStatus.OK)
        msg = DiagnosticArray()
        msg.header.stamp = to_stamp(self.now())
        msg.status = [DiagnosticStatus(
            level=level, name="rewardforge/safety", hardware_id="command_gate",
            message="; ".join(s.reasons) or ("clipped: " + ", ".join(s.clipped) if s.clipped else "ok"),
            values=[KeyValue(key=k, value=str(v)) for k, v in {
                "estopped": self.safety.estopped, "held_ticks": self.held_ticks, "ticks": self.ticks,
                "rejected_nonfinite": self.safety.rejected_nonfinite, "interventions": self.mux.interventions,
            }.items()])]
        self.pub_status.publish(msg)


def main(args: list[str] | None = None) -> None:
    from robot.nodes import spin

    spin(CommandGateNode, args)


if __name__ == "__main__":
    main()
