"""Message conversion and QoS for the bridge: numpy <-> ROS 2 messages, in one place.

Stamps are float seconds of the node's clock (ROS time, or /clock with use_sim_time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, JointState

from robot.observation import ObservationAssembler, Source

# Commands: the newest one is all that matters; reliable so a stop is not lost.
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# Robot state (joint states, poses): reliable, short queue (ros2_control's broadcaster default is depth 10).
STATE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# Camera images: best effort, newest only (a late frame is worthless).
IMAGE_QOS = qos_profile_sensor_data
# E-stop: latched, so a node that starts after the button was pressed still sees it.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def quat_to_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a rotation matrix (Shepperd's method, numerically safe branch)."""
    R = np.asarray(R, float).reshape(3, 3)
    tr = R.trace()
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        return 0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
    q = [0.0, 0.0, 0.0, 0.0]
    q[0] = (R[k, j] - R[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (R[j, i] + R[i, j]) / s
    q[1 + k] = (R[k, i] + R[i, k]) / s
    return q[0], q[1], q[2], q[3]


def yaw_of_quat(w: float, x: float, y: float, z: float) -> float:
    """Yaw about world z of the frame's x axis: the sim's ``ee_yaw`` convention (sim.panda.controller.yaw_of)."""
    R = quat_to_matrix(w, x, y, z)
    return float(math.atan2(R[1, 0], R[0, 0]))


def pose_msg(position: np.ndarray, quat_wxyz: tuple[float, float, float, float], frame: str, t: float) -> PoseStamped:
    m = PoseStamped()
    m.header.frame_id, m.header.stamp = frame, to_stamp(t)
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in position)
    o = m.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in quat_wxyz)
    return m


def twist_msg(linear: np.ndarray, angular: np.ndarray, frame: str, t: float) -> TwistStamped:
    m = TwistStamped()
    m.header.frame_id, m.header.stamp = frame, to_stamp(t)
    m.twist.linear.x, m.twist.linear.y, m.twist.linear.z = (float(v) for v in linear)
    m.twist.angular.x, m.twist.angular.y, m.twist.angular.z = (float(v) for v in angular)
    return m


def image_msg(rgb: np.ndarray, frame: str, t: float) -> Image:
    m = Image()
    m.header.frame_id, m.header.stamp = frame, to_stamp(t)
    m.height, m.width = int(rgb.shape[0]), int(rgb.shape[1])
    m.encoding, m.is_bigendian, m.step = "rgb8", 0, int(rgb.shape[1] * 3)
    m.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return m


def image_array(m: Image) -> np.ndarray:
    if m.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding {m.encoding!r} not supported (rgb8, bgr8)")
    a = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.step)[:, : m.width * 3].reshape(m.height, m.width, 3)
    return a[..., ::-1].copy() if m.encoding == "bgr8" else a.copy()


def camera_info_msg(width: int, height: int, fovy_deg: float, frame: str, t: float) -> CameraInfo:
    """Pinhole intrinsics of a MuJoCo camera (square pixels, principal point at the centre)."""
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    m = CameraInfo()
    m.header.frame_id, m.header.stamp = frame, to_stamp(t)
    m.width, m.height, m.distortion_model = int(width), int(height), "plumb_bob"
    m.d = [0.0] * 5
    m.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    m.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    m.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return m


def extract(source: Source, msg: object) -> np.ndarray:
    """The part of ``msg`` a :class:`Source` names, as a float vector. KeyError for a missing joint."""
    if source.kind == "pose":
        p, o = msg.pose.position, msg.pose.orientation  # type: ignore[attr-defined]
        if source.part == "position":
            return np.array([p.x, p.y, p.z])
        if source.part == "yaw":
            return np.array([yaw_of_quat(o.w, o.x, o.y, o.z)])
        return np.array([o.w, o.x, o.y, o.z])
    if source.kind == "twist":
        v = getattr(msg.twist, source.part)  # type: ignore[attr-defined]
        return np.array([v.x, v.y, v.z])
    js: JointState = msg  # type: ignore[assignment]
    values = js.position if source.part == "position" else js.velocity
    index = {n: i for i, n in enumerate(js.name)}
    missing = [n for n in source.names if n not in index or index[n] >= len(values)]
    if missing:
        raise KeyError(f"{source.topic} has no {source.part} for joints {missing}")
    return np.array([values[index[n]] for n in source.names])


def joint_state_msg(names: list[str], position: np.ndarray, velocity: np.ndarray, t: float) -> JointState:
    m = JointState()
    m.header.stamp = to_stamp(t)
    m.name = list(names)
    m.position = [float(v) for v in position]
    m.velocity = [float(v) for v in velocity]
    return m


MSG_TYPES = {"pose": PoseStamped, "twist": TwistStamped, "joints": JointState}


def subscribe_sources(node: Any, sources: Mapping[str, list[Source]], assembler: ObservationAssembler,
                      on_message: Callable[[str], None] | None = None) -> list[str]:
    """Subscribe ``node`` to every topic the observation ``sources`` read (one subscription per
    topic, fanned out to each field that reads it) and feed ``assembler``; returns the topics.
    ``on_message(topic)`` runs after each message (the policy node's input trigger)."""
    by_topic: dict[str, list[tuple[str, int, Source]]] = {}
    for name, srcs in sources.items():
        for i, src in enumerate(srcs):
            by_topic.setdefault(src.topic, []).append((name, i, src))

    def callback(msg: Any, users: list[tuple[str, int, Source]], topic: str) -> None:
        stamp = to_sec(msg.header.stamp)
        for name, i, src in users:
            try:
                assembler.put(name, i, extract(src, msg), stamp)
            except KeyError as err:
                node.get_logger().warning(str(err), throttle_duration_sec=2.0)
        if on_message is not None:
            on_message(topic)

    for topic, users in by_topic.items():
        node.create_subscription(MSG_TYPES[users[0][2].kind], topic,
                                 lambda m, u=users, t=topic: callback(m, u, t), STATE_QOS)
    return sorted(by_topic)
