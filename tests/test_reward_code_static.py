"""Static whitelist, code extraction and the task view (no processes, no env)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_reward_code_programs as P  # noqa: E402

from common.spec import ActionSpec, EmbodimentSpec, ObsField  # noqa: E402
from rewards.code import (  # noqa: E402
    build_view,
    check_source,
    extract_code,
    first_prompt,
    refine_prompt,
    view_arrays,
)


@pytest.mark.parametrize(("src", "needle"), [
    (P.BROKEN, "syntax error at line 3"),
    (P.IMPORT_OS, "import of 'os' is not allowed"),
    (P.OPEN, "name 'open' is not allowed"),
    (P.DUNDER_IMPORT, "name '__import__' is not allowed"),
    (P.LOOP, "`while` loop"),
    ("def compute_reward(o, a, n):\n    return ().__class__.__bases__\n", "dunder attribute '__class__'"),
    ("import numpy as np\ndef compute_reward(o, a, n):\n    return np.load('x.npy')\n", "attribute 'load'"),
    ("from os import path\ndef compute_reward(o, a, n):\n    return 0\n", "import of 'os'"),
    ("import socket\ndef compute_reward(o, a, n):\n    return 0\n", "import of 'socket'"),
    ("def f(x):\n    return x\n", "no top-level function `compute_reward"),
    ("def compute_reward(o):\n    return o\n", "exactly three arguments"),
    ("def compute_reward(o, a, n):\n    return 2 ** 10 ** 10\n", "huge literal arithmetic"),
    ("print('hi')\ndef compute_reward(o, a, n):\n    return 0\n", "top-level expressions"),
])
def test_static_rejections_name_the_problem(src, needle):
    rep = check_source(src)
    assert not rep.ok
    assert any(needle in r for r in rep.reasons), rep.reasons


def test_good_and_example_programs_pass_and_reads_are_listed():
    rep = check_source(P.GOOD)
    assert rep.ok, rep.reasons
    assert rep.reads == ["ee_pos", "goal_pos"]
    example = Path(__file__).parents[1] / "rewards/code/examples/panda_reach_handwritten.py"
    assert "HAND-WRITTEN" in example.read_text()
    assert check_source(example.read_text()).ok


def test_size_limit():
    src = P.GOOD + "\n".join(f"C{i} = {i}" for i in range(500))
    assert any("lines; the limit" in r for r in check_source(src).reasons)


def test_extract_code_from_completions():
    assert extract_code(P.fenced(P.GOOD)) == P.GOOD
    two = "```python\nimport numpy\n```\nthen\n```py\n" + P.GOOD + "```"
    assert extract_code(two) == P.GOOD  # the block that defines compute_reward wins
    assert extract_code("Sorry, I cannot help with that.") is None
    assert extract_code(P.GOOD) == P.GOOD  # bare code without fences
    unterminated = "```python\n" + P.GOOD
    assert extract_code(unterminated) == P.GOOD


def _spec():
    obs = (ObsField("ee_pos", (3,), units="m", description="pinch site position"),
           ObsField("gripper", (1,), frame="none", units="1"),
           ObsField("goal_pos", (3,), units="m"),
           ObsField("keypoints", (2, 3), units="m", privileged=True),
           ObsField("image_front", (8, 8, 3), dtype="uint8", frame="camera"))
    return EmbodimentSpec("panda/reach", 10.0, ActionSpec(("dx", "dy", "dz", "gripper"), (0.05, 0.05, 0.05, 1.0)),
                          obs, (0.3, -0.3, 0.01), (0.75, 0.3, 0.4), {"keypoint_names": ["pinch", "goal"]})


def test_view_is_generated_from_the_spec_and_built_from_live_observations():
    view = build_view(_spec())
    assert view.keys == ("ee_pos", "gripper", "goal_pos", "keypoints", "kp_pinch", "kp_goal")  # no images
    text = view.describe()
    assert "ee_pos" in text and "(B, 3)" in text and "[m, frame: base]" in text and "pinch site position" in text
    assert "kp_goal" in text and "dx (x0.05)" in text and "Control rate: 10 Hz" in text
    with pytest.raises(ValueError, match="no built-in task text"):
        build_view(EmbodimentSpec("other/task", 10.0, ActionSpec(("a",), (1.0,)), ()))
    live = {"ee_pos": np.array([0.5, 0.0, 0.2], np.float32), "gripper": np.array([1.0], np.float32),
            "goal_pos": np.array([0.6, 0.1, 0.2], np.float32),
            "keypoints": np.array([[0.5, 0.0, 0.2], [0.6, 0.1, 0.2]], np.float32),
            "image_front": np.zeros((8, 8, 3), np.uint8)}
    one = view_arrays(view, live)  # one robot observation -> batch of one
    assert one["ee_pos"].shape == (1, 3) and one["kp_goal"].tolist() == [[pytest.approx(0.6), pytest.approx(0.1),
                                                                          pytest.approx(0.2)]]
    batch = view_arrays(view, {k: np.stack([v] * 5) for k, v in live.items()})
    assert batch["kp_pinch"].shape == (5, 3) and "image_front" not in batch
    with pytest.raises(KeyError, match="goal_pos"):
        view_arrays(view, {k: v for k, v in live.items() if k != "goal_pos"})


def test_prompts_carry_view_guidance_examples_and_feedback():
    view = build_view(_spec()).describe()
    msgs = first_prompt(view, [P.GOOD])
    assert msgs[0]["role"] == "system" and view in msgs[1]["content"] and "hand-written" in msgs[1]["content"]
    ref = refine_prompt(view, P.GOOD, "- the reward is constant", human="the arm stops 5 cm short")
    assert "the reward is constant" in ref[1]["content"] and "stops 5 cm short" in ref[1]["content"]
    assert "def compute_reward" in ref[1]["content"]
