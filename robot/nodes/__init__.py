"""ROS 2 nodes of the bridge; each module has a ``main`` that is a console script."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run one node until Ctrl-C or shutdown; a failure to start exits with status 1 and says why."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:  # noqa: BLE001 - report any start-up error on one line, then exit 1
        name = getattr(make_node, "__name__", "node")
        print(f"[{name}] error: {err}", file=sys.stderr, flush=True)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        sys.exit(1)
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
