"""VLM-proposed keypoints and the OpenAI-compatible client, against the stand-in server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standin_llm import Reply, StandinLLM, standin_llm_fixture  # noqa: E402, F401

import sim  # noqa: E402
from rewards.keypoints import KeypointReward, SimKeypoints, render_rgbd  # noqa: E402
from rewards.openai_client import ChatClient, LLMError, encode_png  # noqa: E402
from rewards.vlm import ProposalError, extract_json, propose_waypoints, validate_proposal  # noqa: E402

TASK = "pick up the red block and place it at the green goal marker"


@pytest.fixture(scope="module")
def scene():
    """One rendered pick-and-place frame (RGB, depth, camera) with its observation and spec."""
    env = sim.make("rewardforge/PandaPickPlace-v0")
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    rgb, depth, cam = render_rgbd(u.model, u.data, "front", 320, 240)
    spec = u.embodiment
    names = list(spec.extra["keypoint_names"])
    live = {n: obs["keypoints"][i].astype(float) for i, n in enumerate(names) if n != "pinch"}
    yield {"rgb": rgb, "depth": depth, "cam": cam, "obs": obs, "spec": spec, "live": live, "names": names}
    env.close()


def _px(scene, p) -> list[float]:
    uv, _ = scene["cam"].project(np.asarray(p, float))
    return [round(float(uv[0]), 1), round(float(uv[1]), 1)]


def good_answer(scene) -> dict:
    block = scene["live"]["object"]
    goal = scene["live"]["goal"]
    return {
        "points": [{"name": "block", "u": _px(scene, block)[0], "v": _px(scene, block)[1]},
                   {"name": "place_spot", "pixel": _px(scene, [goal[0], goal[1], 0.0])}],
        "waypoints": [
            {"point": "pinch", "target": "block", "offset": [0, 0, 0.08], "tolerance": 0.03, "gripper": "open"},
            {"point": "pinch", "target": "block", "offset": [0, 0, 0], "tolerance": 0.02, "gripper": "closed"},
            {"point": "block", "target": "place_spot", "offset": [0, 0, 0.1], "tolerance": 0.04, "gripper": None},
        ],
    }


def client_for(server: StandinLLM, **kw) -> ChatClient:
    return ChatClient(**{"base_url": server.base_url, "model": "stand-in-vlm", "api_key_env": None,
                         "timeout_s": 5.0, "retries": 0, "backoff_s": 0.01, **kw})


def propose(server, scene, **kw):
    spec = scene["spec"]
    return propose_waypoints(client_for(server), TASK, scene["rgb"], scene["depth"], scene["cam"],
                             spec.workspace_low, spec.workspace_high, live=scene["live"],
                             name_map={"block": "object"}, **kw)


# ---------------------------------------------------------------------------
# proposals


def test_good_answer_in_fences_becomes_waypoints(standin_llm, scene):
    text = "Sure! Here is the plan:\n```json\n" + json.dumps(good_answer(scene)) + "\n```\nGood luck."
    standin_llm.push(text)
    prop = propose(standin_llm, scene)
    assert prop.rejected == [] and len(prop.waypoints) == 3
    # the marked block surface back-projects next to the block centre (2 cm half size)
    assert np.linalg.norm(prop.points["block"] - scene["live"]["object"]) < 0.035
    # live names stay live (the block moves once grasped); other targets are frozen in the base frame
    w0, w1, w2 = prop.waypoints
    assert (w0.point, w0.target, w0.gripper) == ("pinch", "object", "open") and w0.offset == (0.0, 0.0, 0.08)
    assert (w1.target, w1.gripper) == ("object", "closed")
    assert (w2.point, w2.target) == ("object", "base")
    goal = scene["live"]["goal"]
    np.testing.assert_allclose(w2.offset, [goal[0], goal[1], 0.1], atol=0.01)
    # the request: model, task text, the frame as a PNG data URL of the right size
    (req,) = standin_llm.requests
    assert req.path == "/v1/chat/completions" and req.json["model"] == "stand-in-vlm"
    user = req.json["messages"][-1]["content"]
    assert TASK in user[0]["text"] and "320 x 240" in user[0]["text"]
    url = user[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (320, 240)
    # the waypoints drive the keypoint reward: the start is stage 0, a grasp pose further on
    term = KeypointReward(prop.waypoints, SimKeypoints(scene["names"]))
    obs = {k: v[None] for k, v in scene["obs"].items()}
    assert term.evaluate(obs)["stage"][0] == 0
    grasp = {**obs, "keypoints": obs["keypoints"].copy(), "gripper": np.array([[0.4]], np.float32)}
    grasp["keypoints"][0, 0] = grasp["keypoints"][0, 1]
    assert term.evaluate(grasp)["stage"][0] == 2
    # and round-trip through the waypoint-file layout
    assert "waypoints" in prop.to_yaml_dict() and "block" in prop.report()


def test_malformed_answer_fails_with_report_then_retry_succeeds(standin_llm, scene):
    standin_llm.push("I am sorry, I cannot see a robot in this picture.")
    with pytest.raises(ProposalError, match="no JSON object in the answer"):
        propose(standin_llm, scene)
    standin_llm.push('{"points": "block at the middle"}', json.dumps(good_answer(scene)))
    prop = propose(standin_llm, scene, attempts=2)
    assert len(prop.waypoints) == 3 and len(standin_llm.requests) == 3


def test_out_of_image_and_unreachable_points_are_rejected_with_reasons(standin_llm, scene):
    ans = good_answer(scene)
    far = _px(scene, [1.0, 0.5, 0.0])  # on the table, but beyond the arm's workspace box
    assert scene["cam"].in_image(np.array(far))
    ans["points"] += [{"name": "off_image", "u": 500, "v": 30},
                      {"name": "far_corner", "u": far[0], "v": far[1]},
                      {"name": "sky", "u": 2, "v": 2}]
    ans["waypoints"] += [
        {"point": "pinch", "target": "off_image", "offset": [0, 0, 0], "tolerance": 0.03},
        {"point": "pinch", "target": "far_corner", "offset": [0, 0, 0], "tolerance": 0.03},
        {"point": "pinch", "target": "block", "offset": [0, 0, 0.45], "tolerance": 0.03},
        {"point": "place_spot", "target": "block", "offset": [0, 0, 0], "tolerance": 0.03},
        {"point": "pinch", "target": "block", "offset": [0, 0, 0], "tolerance": 0.03, "gripper": "half"},
    ]
    standin_llm.push(json.dumps(ans))
    prop = propose(standin_llm, scene)
    assert len(prop.waypoints) == 3 and set(prop.points) == {"block", "place_spot"}
    why = {r.item: r.reason for r in prop.rejected}
    assert "outside the 320x240 image" in why["point 'off_image'"]
    assert "outside the reachable workspace" in why["point 'far_corner'"]
    assert "background" in why["point 'sky'"] or "height range" in why["point 'sky'"]
    assert "outside the 320x240 image" in why["waypoint 3"]  # its target was rejected, and says why
    assert "outside the reachable workspace" in why["waypoint 4"]
    assert "target position" in why["waypoint 5"]  # 45 cm above the block is out of reach
    assert "not tracked live" in why["waypoint 6"]
    assert "gripper must be" in why["waypoint 7"]


def test_height_range_check(scene):
    spec = scene["spec"]
    prop = validate_proposal(good_answer(scene), scene["cam"], scene["depth"], spec.workspace_low,
                             spec.workspace_high, live=scene["live"], table_z=(-0.02, 0.005))
    why = {r.item: r.reason for r in prop.rejected}
    assert "height range" in why["point 'block'"]  # the block's surface is 2-4 cm above the table


def test_extract_json_tolerates_wrapping():
    assert extract_json('prefix {"a": {"b": "}"}} suffix {"c": 1}') == {"a": {"b": "}"}}
    assert extract_json('```\n{"x": [1, 2]}\n```') == {"x": [1, 2]}
    assert extract_json('text {not json} then {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")


# ---------------------------------------------------------------------------
# the client


def test_server_error_is_retried_then_raises_bounded(standin_llm):
    standin_llm.push(Reply(status=500), Reply(status=503), Reply(status=500))
    client = client_for(standin_llm, retries=2)
    t = time.monotonic()
    with pytest.raises(LLMError, match="after 3 attempts: HTTP 500") as err:
        client.chat([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t < 3.0 and len(standin_llm.requests) == 3 and err.value.status == 500
    # a transient failure followed by an answer succeeds
    standin_llm.push(Reply(status=429, headers={"Retry-After": "0"}), "fine")
    assert client.chat([{"role": "user", "content": "hi"}]).text == "fine"
    # non-retryable statuses fail at once
    standin_llm.push(Reply(status=401))
    n = len(standin_llm.requests)
    with pytest.raises(LLMError, match="HTTP 401"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(standin_llm.requests) == n + 1


def test_slow_server_times_out_bounded(standin_llm):
    standin_llm.push(Reply("too late", delay_s=5.0), Reply("too late", delay_s=5.0))
    client = client_for(standin_llm, timeout_s=0.3, retries=1)
    t = time.monotonic()
    with pytest.raises(LLMError, match="within 0.3 s"):
        client.chat([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t < 2.5
    assert len(standin_llm.requests) == 2


def test_samples_key_and_body(standin_llm, monkeypatch):
    # a server that ignores n: the client asks again for the missing samples
    standin_llm.push(["a", "b"], ["c"])
    monkeypatch.setenv("STANDIN_KEY", "sk-test")
    client = client_for(standin_llm, api_key_env="STANDIN_KEY", n=3, temperature=0.7)
    res = client.chat([{"role": "user", "content": "hi"}])
    assert res.texts == ["a", "b", "c"] and len(res.raw) == 2
    first, second = standin_llm.requests
    assert first.json["n"] == 3 and "n" not in second.json and first.json["temperature"] == 0.7
    assert first.headers["Authorization"] == "Bearer sk-test"
    monkeypatch.delenv("STANDIN_KEY")
    with pytest.raises(LLMError, match="'STANDIN_KEY' is not set"):
        client.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="unknown keys \\['modle'\\]"):
        ChatClient.from_config({"modle": "x"})


def test_empty_queue_and_bad_body_fail_loudly(standin_llm):
    client = client_for(standin_llm)
    with pytest.raises(LLMError, match="no scripted reply left"):
        client.chat([{"role": "user", "content": "hi"}])
    standin_llm.push(Reply(body={"nothing": "here"}))
    with pytest.raises(LLMError, match="no choices"):
        client.chat([{"role": "user", "content": "hi"}])


def test_png_encoder_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = encode_png(img)
    ihdr = struct.unpack(">IIBBBBB", png[16:29])
    assert ihdr[:4] == (7, 5, 8, 2)
    length = struct.unpack(">I", png[33:37])[0]
    raw = zlib.decompress(png[41:41 + length])
    rows = np.frombuffer(raw, np.uint8).reshape(5, 1 + 7 * 3)
    assert np.all(rows[:, 0] == 0)
    np.testing.assert_array_equal(rows[:, 1:].reshape(5, 7, 3), img)
