"""The MuJoCo Panda as a ROS 2 robot: ``rewardforge-sim-robot``.

It speaks what a ros2_control arm with MoveIt Servo speaks, so every deploy path can be
run end to end without hardware:

Publishes
  ``/joint_states`` (sensor_msgs/JointState: joint1..7 and ``gripper``, the openness in [0, 1]),
  ``ee_pose`` (PoseStamped, fingertip pinch site), ``ee_twist`` (TwistStamped),
  ``objects/<name>/pose`` (PoseStamped: ``object``, ``goal``), ``objects/joint_states``
  (articulations: ``drawer`` opening, m), ``keypoints/<name>`` (PoseStamped),
  ``camera/<cam>/image_raw`` + ``camera/<cam>/camera_info``, ground truth of the sim task
  ``sim/success`` (std_msgs/Bool), ``sim/progress`` (std_msgs/Float64) and ``sim/reward``
  (std_msgs/Float64: the task's own reward of the state just published, what a gym step of the
  same task returns), ``sim/episode`` (std_msgs/Header, latched: ``frame_id`` the episode number,
  ``stamp`` its start; every state stamped at or after it belongs to that episode, so a learner
  never joins two episodes into one transition), and ``/clock`` when ``real_time`` is false.
Accepts
  ``servo/delta_twist_cmds`` (TwistStamped, m/s and rad/s about z, as MoveIt Servo),
  ``joint_trajectory_controller/joint_trajectory`` (JointTrajectory: tracks the last point),
  ``forward_position_controller/commands`` (Float64MultiArray: 7 joint positions),
  ``gripper/command`` (std_msgs/Float64 in [-1 closed, 1 open]).
Services
  ``~/reset`` (std_srvs/Trigger): a new episode of the task (next seed).

A twist moves the operational-space target by v * dt each tick; with no twist for
``command_timeout`` seconds the target stops (MoveIt Servo's incoming-command timeout).
"""

from __future__ import annotations

import os
import threading

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from robot.observation import ARM_JOINTS, GRIPPER_JOINT
from robot.ros_io import (
    COMMAND_QOS,
    IMAGE_QOS,
    LATCHED_QOS,
    STATE_QOS,
    camera_info_msg,
    image_msg,
    joint_state_msg,
    matrix_to_quat,
    pose_msg,
    to_sec,
    to_stamp,
    twist_msg,
)


class SimRobotNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_robot", **kwargs)
        p = self.declare_parameter
        self.task = p("task", "rewardforge/PandaReach-v0").value
        self.seed = int(p("seed", 0).value)
        self.rate = float(p("rate", 100.0).value)
        self.real_time = bool(p("real_time", True).value)
        self.cameras = list(p("cameras", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, description="camera names; [''] for none")).value)
        self.cameras = [c for c in self.cameras if c]
        self.image_size = int(p("image_size", 84).value)
        self.camera_rate = float(p("camera_rate", 10.0).value)
        self.base_frame = p("base_frame", "base").value
        self.command_timeout = float(p("command_timeout", 0.1).value)
        twist_topic = p("twist_topic", "servo/delta_twist_cmds").value
        traj_topic = p("joint_trajectory_topic", "joint_trajectory_controller/joint_trajectory").value
        fwd_topic = p("joint_commands_topic", "forward_position_controller/commands").value
        grip_topic = p("gripper_topic", "gripper/command").value

        import sim

        self.env = sim.make(self.task)
        self.arm = self.env.unwrapped
        self.episode = 0
        self.arm_reset()
        self.dt_physics = float(self.arm.model.opt.timestep)
        self.steps_per_tick = max(1, round(1.0 / (self.rate * self.dt_physics)))
        self.sim_time = 0.0

        self.twist: tuple[np.ndarray, float, float] | None = None  # (linear, yaw rate, received at)
        self.create_subscription(TwistStamped, twist_topic, self._on_twist, COMMAND_QOS)
        self.create_subscription(JointTrajectory, traj_topic, self._on_trajectory, COMMAND_QOS)
        self.create_subscription(Float64MultiArray, fwd_topic, self._on_joint_commands, COMMAND_QOS)
        self.create_subscription(Float64, grip_topic, self._on_gripper, COMMAND_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)

        pub = self.create_publisher
        self.pub_joints = pub(JointState, "/joint_states", STATE_QOS)
        self.pub_ee = pub(PoseStamped, "ee_pose", STATE_QOS)
        self.pub_ee_twist = pub(TwistStamped, "ee_twist", STATE_QOS)
        self.pub_obj_joints = pub(JointState, "objects/joint_states", STATE_QOS)
        self.pub_success = pub(Bool, "sim/success", STATE_QOS)
        self.pub_progress = pub(Float64, "sim/progress", STATE_QOS)
        self.pub_reward = pub(Float64, "sim/reward", STATE_QOS)
        self.pub_episode = pub(Header, "sim/episode", LATCHED_QOS)
        self.pub_poses: dict[str, object] = {}
        self.pub_images = {c: pub(Image, f"camera/{c}/image_raw", IMAGE_QOS) for c in self.cameras}
        self.pub_info = {c: pub(CameraInfo, f"camera/{c}/camera_info", IMAGE_QOS) for c in self.cameras}
        self.pub_clock = None if self.real_time else pub(Clock, "/clock", 10)
        self.next_frame = 0.0
        self.ticks = 0
        # Cameras render on a thread of their own, from a snapshot of the state: a frame takes tens of
        # milliseconds on a CPU (llvmpipe), which on this thread would delay every state message.
        self._snapshot: tuple[float, dict[str, np.ndarray]] | None = None
        self._frame_ready = threading.Condition()
        self._stopping = False
        self._camera_thread = None
        if self.cameras:
            self._camera_thread = threading.Thread(target=self._camera_loop, name="cameras", daemon=True)
            self._camera_thread.start()
        period = 1.0 / self.rate if self.real_time else 0.0
        self.timer = self.create_timer(period, self._tick)
        self._announce_episode()
        self.get_logger().info(
            f"{self.task}: {self.rate:.0f} Hz ({self.steps_per_tick} physics steps/tick), "
            f"{'real time' if self.real_time else 'sim time on /clock'}, cameras {self.cameras or 'none'}")

    # ---- time ----------------------------------------------------------------
    def now(self) -> float:
        return self.sim_time if not self.real_time else to_sec(self.get_clock().now().to_msg())

    # ---- commands --------------------------------------------------------------
    def _on_twist(self, msg: TwistStamped) -> None:
        v = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        wz = float(msg.twist.angular.z)
        if not (np.all(np.isfinite(v)) and np.isfinite(wz)):
            self.get_logger().warning("non-finite twist ignored", throttle_duration_sec=1.0)
            return
        self.twist = (v, wz, self.now())

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        self._joint_target(list(msg.joint_names), list(msg.points[-1].positions))

    def _on_joint_commands(self, msg: Float64MultiArray) -> None:
        self._joint_target(list(ARM_JOINTS), list(msg.data))

    def _joint_target(self, names: list[str], positions: list[float]) -> None:
        try:
            index = {n: i for i, n in enumerate(names)}
            q = np.array([positions[index[n]] for n in ARM_JOINTS])
            self.arm.command_joints(q)
        except (KeyError, IndexError, ValueError) as err:
            self.get_logger().warning(f"joint command ignored: {err!r} (need 7 finite values for {ARM_JOINTS})",
                                      throttle_duration_sec=1.0)
            return
        self.twist = None

    def _on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.arm.command_gripper(float(msg.data))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.episode += 1
        self.arm_reset()
        self._announce_episode()
        response.success, response.message = True, f"episode {self.episode} (seed {self.seed + self.episode})"
        return response

    def _announce_episode(self) -> None:
        """Stamp: now, before any state of the new episode goes out (same executor thread as _tick)."""
        self.pub_episode.publish(Header(stamp=to_stamp(self.now()), frame_id=str(self.episode)))

    def arm_reset(self) -> None:
        self.env.reset(seed=self.seed + self.episode)
        self.twist = None

    # ---- the loop ----------------------------------------------------------------
    def _tick(self) -> None:
        dt = self.steps_per_tick * self.dt_physics
        now = self.now()
        if self.twist is not None:
            v, wz, at = self.twist
            if now - at > self.command_timeout:
                self.twist = None
            else:
                yaw = self.arm.target_yaw + wz * dt if self.arm.yaw else None
                self.arm.command_cartesian(self.arm.target + v * dt, yaw)
        self.arm.advance(self.steps_per_tick)
        if not self.real_time:
            self.sim_time += dt
            self.pub_clock.publish(Clock(clock=to_stamp(self.sim_time)))
        self.publish_state(self.now())
        self.ticks += 1

    def publish_state(self, t: float) -> None:
        arm, d = self.arm, self.arm.data
        obs = arm.observe()
        pos, R, v, w = arm.ee_frame()
        self.pub_joints.publish(joint_state_msg(
            [*ARM_JOINTS, GRIPPER_JOINT], np.r_[d.qpos[:7], obs["gripper"]], np.r_[d.qvel[:7], 0.0], t))
        self.pub_ee.publish(pose_msg(pos, matrix_to_quat(R), self.base_frame, t))
        self.pub_ee_twist.publish(twist_msg(v, w, self.base_frame, t))
        if "goal_pos" in obs:
            self._pose("objects/goal/pose", obs["goal_pos"], (1.0, 0.0, 0.0, 0.0), t)
        if "object_pos" in obs:
            self._pose("objects/object/pose", obs["object_pos"], tuple(obs["object_quat"]), t)
        if "drawer_pos" in obs:
            self.pub_obj_joints.publish(joint_state_msg(["drawer"], obs["drawer_pos"], np.zeros(1), t))
        for name, point in zip(arm.keypoint_names, obs["keypoints"], strict=True):
            self._pose(f"keypoints/{name}", point, (1.0, 0.0, 0.0, 0.0), t)
        reward, _, success, progress = arm.evaluate()
        self.pub_success.publish(Bool(data=bool(success)))
        self.pub_progress.publish(Float64(data=float(progress)))
        self.pub_reward.publish(Float64(data=float(reward)))
        if self.cameras and t >= self.next_frame:
            self.next_frame = t + 1.0 / self.camera_rate
            state = {k: getattr(d, k).copy() for k in ("qpos", "qvel", "mocap_pos", "mocap_quat")}
            with self._frame_ready:  # the newest state wins if the camera thread is still busy
                self._snapshot = (t, state)
                self._frame_ready.notify()

    def _camera_loop(self) -> None:
        """Render each snapshot into a private MjData (the physics thread keeps stepping the real one)
        and publish the frames stamped with the snapshot's time."""
        import mujoco

        arm = self.arm
        data = mujoco.MjData(arm.model)
        renderer = arm.make_renderer(self.image_size, self.image_size)
        while True:
            with self._frame_ready:
                while self._snapshot is None and not self._stopping:
                    self._frame_ready.wait()
                if self._stopping:
                    break
                t, state = self._snapshot
                self._snapshot = None
            for k, v in state.items():
                getattr(data, k)[:] = v
            mujoco.mj_forward(arm.model, data)
            for cam in self.cameras:
                renderer.update_scene(data, camera=cam)
                frame = renderer.render().copy()
                self.pub_images[cam].publish(image_msg(frame, f"{cam}_optical_frame", t))
                self.pub_info[cam].publish(camera_info_msg(self.image_size, self.image_size, arm.camera_fovy(cam),
                                                           f"{cam}_optical_frame", t))
        renderer.close()

    def _pose(self, topic: str, position: np.ndarray, quat: tuple, t: float) -> None:
        pub = self.pub_poses.get(topic)
        if pub is None:
            pub = self.pub_poses[topic] = self.create_publisher(PoseStamped, topic, STATE_QOS)
        pub.publish(pose_msg(position, quat, self.base_frame, t))

    def destroy_node(self) -> None:
        if self._camera_thread is not None:
            with self._frame_ready:
                self._stopping = True
                self._frame_ready.notify()
            self._camera_thread.join(timeout=5.0)
        self.env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robot.nodes import spin

    spin(SimRobotNode, args)


if __name__ == "__main__":
    main()
