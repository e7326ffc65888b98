"""Stand-ins for ROS 2's ``launch`` and ``launch_ros`` Python packages, which cannot be installed here
(MACHINE.md). They only record what a launch file declares, so tests can check every node,
executable, parameter file and remapping, and then bring the same nodes up directly with rclpy.
This is a boundary stand-in: on a robot computer the real packages run the same files."""

from __future__ import annotations

import importlib.util
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LaunchConfiguration:
    def __init__(self, variable_name: str, default: Any = None) -> None:
        self.name, self.default = variable_name, default


@dataclass
class DeclareLaunchArgument:
    name: str
    default_value: Any = None
    description: str = ""
    choices: list[str] | None = None


@dataclass
class Node:
    executable: str
    package: str | None = None
    name: str | None = None
    namespace: str | None = None
    parameters: list[Any] = field(default_factory=list)
    remappings: list[tuple[Any, Any]] = field(default_factory=list)
    output: str | None = None
    arguments: list[Any] = field(default_factory=list)
    ros_arguments: list[Any] = field(default_factory=list)


@dataclass
class ExecuteProcess:
    cmd: list[Any]
    output: str | None = None
    condition: Any = None
    name: str | None = None


@dataclass
class IfCondition:
    predicate_expression: Any


@dataclass
class LaunchDescription:
    entities: list[Any]


@contextmanager
def stub_modules():
    mods = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "ExecuteProcess": ExecuteProcess},
        "launch.conditions": {"IfCondition": IfCondition},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    saved = {k: sys.modules.get(k) for k in mods}
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@dataclass
class ResolvedNode:
    executable: str
    name: str
    parameter_files: list[Path]
    parameters: dict[str, Any]  # files then dicts, in order, as ROS applies them
    remappings: list[tuple[str, str]]


def load(path: Path, args: dict[str, str]) -> tuple[list[DeclareLaunchArgument], list[ResolvedNode]]:
    """Run ``generate_launch_description()`` of a launch file and resolve its nodes with ``args``."""
    with stub_modules():
        spec = importlib.util.spec_from_file_location(f"launchfile_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        desc = module.generate_launch_description()
    declared = [e for e in desc.entities if isinstance(e, DeclareLaunchArgument)]
    values = {d.name: d.default_value for d in declared}
    for d in declared:
        if d.name in args:
            if d.choices and args[d.name] not in d.choices:
                raise ValueError(f"{path.name}: {d.name}:={args[d.name]} not in {d.choices}")
            values[d.name] = args[d.name]
    unknown = set(args) - set(values)
    if unknown:
        raise ValueError(f"{path.name} declares no launch arguments {sorted(unknown)}")

    def resolve(x: Any) -> Any:
        if isinstance(x, LaunchConfiguration):
            if values.get(x.name) is None:
                raise ValueError(f"{path.name}: launch argument {x.name!r} is required (no default)")
            return values[x.name]
        if isinstance(x, list):
            return "".join(str(resolve(p)) for p in x)
        if isinstance(x, dict):
            return {k: resolve(v) for k, v in x.items()}
        return x

    import yaml

    nodes = []
    for e in desc.entities:
        if not isinstance(e, Node):
            continue
        name = e.name or e.executable
        files, params = [], {}
        for entry in e.parameters:
            entry = resolve(entry)
            if isinstance(entry, dict):
                params.update(entry)
                continue
            f = Path(entry)
            if not f.is_file():
                raise FileNotFoundError(f"{path.name}: parameter file {f} of node {name} does not exist")
            data = yaml.safe_load(f.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"{f}: not a ROS 2 parameter file (a mapping of node names)")
            for key in ("/**", name, f"/{name}"):
                block = data.get(key)
                if block is None:
                    continue
                if not isinstance(block, dict) or not isinstance(block.get("ros__parameters"), dict):
                    raise ValueError(f"{f}: {key} must hold a 'ros__parameters' mapping")
                params.update(block["ros__parameters"])
            files.append(f)
        remaps = [(str(resolve(a)), str(resolve(b))) for a, b in e.remappings]
        nodes.append(ResolvedNode(e.executable, name, files, params, remaps))
    return declared, nodes
