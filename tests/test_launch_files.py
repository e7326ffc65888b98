"""Every launch file in launch/: each executable is one of our console scripts, each parameter
file is a valid ROS 2 parameter file, every parameter is declared by the node that gets it, every
remapping names a topic that node uses and a valid target, and each node comes up with exactly
those parameters (in-process, real rclpy)."""

import importlib
import json
import tomllib
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name

from tests.launch_stub import load

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
POLICY = str(ROOT / "tests" / "data" / "panda_reach_policy.pt")
NODE_CLASSES = {
    "robot.nodes.sim_robot": "SimRobotNode", "robot.nodes.command_gate": "CommandGateNode",
    "robot.nodes.policy_node": "PolicyNode", "robot.nodes.reward_monitor": "RewardMonitorNode",
    "robot.nodes.recorder": "RecorderNode", "robot.nodes.scripted_person": "ScriptedPersonNode",
}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    import sim

    env = sim.make("rewardforge/PandaReach-v0")
    path = tmp_path_factory.mktemp("spec") / "panda_reach.json"
    path.write_text(json.dumps(env.unwrapped.embodiment.to_dict()))
    env.close()
    return str(path)


def cases(spec_file, tmp):
    yield "sim.launch.py", {"checkpoint": POLICY}
    yield "record_sim.launch.py", {"task": "rewardforge/PandaReach-v0", "root": f"{tmp}/sim_demos"}
    yield "online_sim.launch.py", {"root": f"{tmp}/online"}
    for robot in ("franka", "ur", "xarm"):
        yield "deploy.launch.py", {"robot": robot, "checkpoint": POLICY, "embodiment_file": spec_file}
        yield "record.launch.py", {"robot": robot, "embodiment_file": spec_file, "root": f"{tmp}/demos_{robot}"}


def test_every_launch_file_is_checked():
    assert sorted(p.name for p in (ROOT / "launch").glob("*.launch.py")) == [
        "deploy.launch.py", "online_sim.launch.py", "record.launch.py", "record_sim.launch.py", "sim.launch.py"]


def test_launch_files_bring_up_real_nodes_with_their_parameters(spec_file, tmp_path):
    rclpy.init()
    try:
        for launch_file, args in cases(spec_file, tmp_path):
            _, nodes = load(ROOT / "launch" / launch_file, args)
            assert nodes
            for n in nodes:
                where = f"{launch_file} {args.get('robot', '')} node {n.name}"
                assert n.executable in SCRIPTS, f"{where}: {n.executable} is not a console script"
                module_name, func = SCRIPTS[n.executable].split(":")
                module = importlib.import_module(module_name)
                assert callable(getattr(module, func))
                cls = getattr(module, NODE_CLASSES[module_name])
                overrides = [Parameter(k, value=v) for k, v in n.parameters.items()]
                node = cls(parameter_overrides=overrides)
                try:
                    undeclared = [k for k in n.parameters if not node.has_parameter(k)]
                    assert not undeclared, f"{where}: parameters not declared by the node: {undeclared}"
                    for k, v in n.parameters.items():
                        got = node.get_parameter(k).value
                        assert got == v or list(got) == list(v), f"{where}: {k} = {got!r}, launch gave {v!r}"
                    topics = {t.topic_name.lstrip("/") for t in (*node.publishers, *node.subscriptions)}
                    for src, dst in n.remappings:
                        validate_topic_name(dst)
                        assert src.lstrip("/") in topics, f"{where}: remaps {src}, which the node does not use"
                finally:
                    node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_parameter_files_name_only_nodes_that_exist():
    names = {"sim_robot", "command_gate", "policy", "reward_monitor", "recorder", "scripted_person"}
    for f in (ROOT / "launch" / "params").glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        assert set(data) <= names, f"{f.name}: unknown node names {set(data) - names}"


def test_required_arguments_and_choices_are_enforced(spec_file):
    with pytest.raises(ValueError, match="'checkpoint' is required"):
        load(ROOT / "launch" / "sim.launch.py", {})
    with pytest.raises(ValueError, match="not in"):
        load(ROOT / "launch" / "deploy.launch.py", {"robot": "kuka", "checkpoint": POLICY, "embodiment_file": spec_file})


def test_online_launch_starts_the_learner_as_a_console_script():
    from tests.launch_stub import ExecuteProcess, stub_modules

    with stub_modules():
        import importlib.util

        path = ROOT / "launch" / "online_sim.launch.py"
        spec = importlib.util.spec_from_file_location("launchfile_online_sim", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        desc = module.generate_launch_description()
    (learner,) = [e for e in desc.entities if isinstance(e, ExecuteProcess)]
    assert learner.cmd[0] in SCRIPTS and SCRIPTS[learner.cmd[0]] == "policies.distributed:learner_main"
    ports = yaml.safe_load((ROOT / "launch" / "params" / "online_sim.yaml").read_text())["policy"]["ros__parameters"]
    assert f"transitions_port={ports['transitions_port']}" in learner.cmd  # the policy node finds the learner
    assert f"weights_port={ports['weights_port']}" in learner.cmd
