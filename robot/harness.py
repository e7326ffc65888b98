"""Bring up bridge nodes as real processes (as a launch file would) and watch them from a probe node.

Used by the end-to-end tests and the latency benchmark. :func:`processes` refuses to start
anything unless ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is set (so discovery stays on this
machine) and passes the caller's ROS_DOMAIN_ID on, so parallel sessions do not see each
other. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import rclpy
from rclpy.node import Node


def ros_args(params: dict[str, object]) -> list[str]:
    out = ["--ros-args"]
    for k, v in params.items():
        if isinstance(v, bool):
            v = str(v).lower()
        elif v == "":
            v = "''"  # an empty string must be quoted for the --ros-args parser
        elif isinstance(v, list | tuple):
            v = "[" + ",".join(repr(x) if isinstance(x, str) else str(x) for x in v) + "]"
        out += ["-p", f"{k}:={v}"]
    return out


@contextmanager
def processes(*specs: tuple[str, dict[str, object]]):
    """Start ``(module, params)`` nodes (``python -m robot.nodes.<module>``); stop them all afterwards."""
    env = dict(os.environ)
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST" or "ROS_DOMAIN_ID" not in env:
        raise RuntimeError("set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of your own first")
    procs = []
    try:
        for module, params in specs:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", f"robot.nodes.{module}", *ros_args(params)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


class Probe:
    """An rclpy node in the test process: subscriptions that keep the latest messages, publishers."""

    def __init__(self, name: str = "probe") -> None:
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(name)
        self.msgs: dict[str, list] = {}
        self.times: dict[str, list[float]] = {}

    def sub(self, msg_type, topic: str, qos) -> None:
        def keep(m, topic=topic):
            self.msgs.setdefault(topic, []).append(m)
            self.times.setdefault(topic, []).append(time.monotonic())

        self.node.create_subscription(msg_type, topic, keep, qos)

    def spin_until(self, cond: Callable[[], bool], timeout: float, procs=()) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.01)
            if cond():
                return True
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"node exited with {p.returncode}:\n{p.stdout.read()}")
        return False

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def last(self, topic: str):
        return self.msgs.get(topic, [None])[-1]

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()
