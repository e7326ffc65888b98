"""Keypoints and waypoints proposed by a vision-language model (KAGI's first step).

One rendered (or camera) frame and the task text go to an OpenAI-compatible vision
endpoint (:mod:`rewards.openai_client`). The prompt asks for JSON: named 2D points on the
image and a waypoint sequence over them. The answer is parsed leniently (code fences and
chatter around the JSON are fine), then every point and waypoint is checked:

* a point must lie inside the image, hit a surface (finite depth, not background), and,
  back-projected with the depth through the :class:`~rewards.keypoints.CameraModel`, lie
  at table/workspace height (``table_z``) and inside the embodiment's workspace box
  (``spec.workspace_low/high``, widened by ``reach_margin``): somewhere the arm can go;
* a waypoint must move a point that is tracked live (``pinch``, the fingertips, or a
  keypoint the observation carries), target an accepted point (or a live keypoint), use a
  sane offset/tolerance/gripper, and, when the fingertips move, have a reachable target.

Accepted waypoints become the same :class:`~rewards.keypoints.Waypoint` structure the
keypoint reward reads from YAML: targets the robot tracks live (names that match the
task's keypoints, or mapped with ``name_map``) stay live; other targets are frozen at
their back-projected base-frame position (``target: base``). Everything rejected is listed
with its reason in :attr:`Proposal.rejected` (and :meth:`Proposal.report`).

Command line (writes a waypoint file the keypoint reward can load by name)::

    uv run --frozen python -m rewards.vlm --env-id rewardforge/PandaPickPlace-v0 \\
        --base-url http://127.0.0.1:8000/v1 --model my-vlm --api-key-env null \\
        --out configs/reward/waypoints/vlm_pick_place.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewards.base import RewardConfigError
from rewards.keypoints import BASE, EE_ALIASES, CameraModel, Waypoint
from rewards.openai_client import ChatClient, system_message, user_message

PINCH = "pinch"
RESERVED = {PINCH, BASE, *EE_ALIASES}

SYSTEM_PROMPT = (
    "You are a robot manipulation planner. You look at one camera image of a tabletop scene with a "
    "robot arm and answer with JSON only."
)

PROMPT = """Task for the robot: {task}

The image is {width} x {height} pixels. Pixel coordinates: "u" counts from the left edge (0) to the
right ({width}), "v" from the top edge (0) down ({height}).

1. Mark the points that matter for the task, on object surfaces (grasp points, contact points,
   targets). Give each a short snake_case name.
2. Write the task as an ordered list of waypoints. Each waypoint says which point must move
   ("point": "pinch" is the robot's fingertips, always known; {tracked_text}), where to
   ("target": one of your point names{live_text}), an "offset" [dx, dy, dz] in metres from that target
   in the robot base frame (x away from the robot, y to the robot's left, z up), a "tolerance" in
   metres, and "gripper": "open", "closed" or null (does not matter).

Answer with one JSON object and nothing else:
{{"points": [{{"name": "block", "u": 140, "v": 96}}],
 "waypoints": [{{"point": "pinch", "target": "block", "offset": [0, 0, 0.1], "tolerance": 0.03, "gripper": "open"}}]}}
"""


class ProposalError(ValueError):
    """The model's answer gave no usable waypoint; the message carries the full report."""


@dataclass
class Rejection:
    item: str  # "point 'block'", "waypoint 2", "answer"
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass
class Proposal:
    """What came out of one answer: accepted points (pixel and base-frame position), waypoints, rejections."""

    pixels: dict[str, tuple[float, float]] = field(default_factory=dict)
    points: dict[str, np.ndarray] = field(default_factory=dict)
    waypoints: list[Waypoint] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    raw: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.waypoints)

    def report(self) -> str:
        lines = [f"accepted {len(self.points)} point(s), {len(self.waypoints)} waypoint(s); "
                 f"rejected {len(self.rejected)}"]
        for n, p in self.points.items():
            u, v = self.pixels[n]
            lines.append(f"  point {n!r}: pixel ({u:.0f}, {v:.0f}) -> base ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m")
        for i, w in enumerate(self.waypoints):
            lines.append(f"  waypoint {i}: {w.point} -> {w.target} + [{', '.join(f'{x:.3f}' for x in w.offset)}] "
                         f"(tol {w.tolerance} m, gripper {w.gripper})")
        lines += [f"  rejected {r}" for r in self.rejected]
        return "\n".join(lines)

    def to_yaml_dict(self, description: str = "") -> dict[str, Any]:
        """The waypoint-file layout of configs/reward/waypoints/ (load it with ``waypoints: <name>``)."""
        return {"description": description or "proposed by a vision-language model (rewards/vlm.py)",
                "proposed_points": {n: [round(float(x), 4) for x in p] for n, p in self.points.items()},
                "waypoints": [w.to_dict() for w in self.waypoints]}


# ---------------------------------------------------------------------------
# parsing


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: inside a code fence if there is one, else anywhere.

    Raises ValueError naming what was wrong when there is none.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the answer is empty")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for i, ch in enumerate(chunk):
            if ch != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(chunk, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    snippet = text.strip().replace("\n", " ")
    raise ValueError(f"no JSON object in the answer: {snippet[:160]!r}")


# ---------------------------------------------------------------------------
# validation


def validate_proposal(
    doc: Mapping[str, Any],
    camera: CameraModel,
    depth: np.ndarray,
    workspace_low: Sequence[float],
    workspace_high: Sequence[float],
    *,
    live: Mapping[str, np.ndarray] | None = None,
    name_map: Mapping[str, str] | None = None,
    table_z: tuple[float, float] = (-0.02, 0.35),
    reach_margin: float = 0.03,
    max_depth: float = 10.0,
    max_offset: float = 0.5,
    max_tolerance: float = 0.2,
    raw: str = "",
) -> Proposal:
    """Check a parsed answer (see the module doc) and turn what passes into waypoints.

    ``live``: keypoints the observation tracks, name -> current base-frame position (for the
    sim: the spec's keypoint names with ``obs["keypoints"]``); ``pinch`` is always live.
    ``name_map``: the model's point name -> live keypoint name (e.g. ``{"red_block": "object"}``).
    """
    live = {k: np.asarray(v, float) for k, v in (live or {}).items()}
    name_map = dict(name_map or {})
    lo = np.asarray(workspace_low, float) - reach_margin
    hi = np.asarray(workspace_high, float) + reach_margin
    prop = Proposal(raw=raw)

    def reachable(p: np.ndarray) -> bool:
        return bool(np.all(p >= lo) and np.all(p <= hi))

    box = f"[{', '.join(f'{x:.2f}' for x in lo)}] .. [{', '.join(f'{x:.2f}' for x in hi)}]"

    points = doc.get("points", [])
    if not isinstance(points, list):
        prop.rejected.append(Rejection("answer", f"'points' must be a list, got {type(points).__name__}"))
        points = []
    for j, pt in enumerate(points):
        name = pt.get("name") if isinstance(pt, Mapping) else None
        item = f"point {name!r}" if isinstance(name, str) else f"point #{j}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]*", name):
            prop.rejected.append(Rejection(item, "needs a name (letters, digits, _)"))
            continue
        if name in RESERVED:
            prop.rejected.append(Rejection(item, f"{name!r} is reserved (the fingertips are tracked already)"))
            continue
        if name in prop.pixels:
            prop.rejected.append(Rejection(item, "duplicate name"))
            continue
        uv = _pixel(pt)
        if uv is None:
            prop.rejected.append(Rejection(item, f"needs numeric pixel coordinates u, v; got {dict(pt)!r}"))
            continue
        if not bool(camera.in_image(uv)):
            prop.rejected.append(Rejection(item, f"pixel ({uv[0]:g}, {uv[1]:g}) is outside the "
                                                 f"{camera.width}x{camera.height} image"))
            continue
        z = float(camera.sample_depth(depth, uv))
        if not math.isfinite(z) or z <= 0 or z >= max_depth:
            prop.rejected.append(Rejection(item, f"no surface at pixel ({uv[0]:g}, {uv[1]:g}) (depth {z:.2f} m: "
                                                 "background)"))
            continue
        p = camera.backproject(uv, z)
        if not table_z[0] <= p[2] <= table_z[1]:
            prop.rejected.append(Rejection(item, f"back-projects to z = {p[2]:.3f} m, outside the table/workspace "
                                                 f"height range [{table_z[0]}, {table_z[1]}] m"))
            continue
        if not reachable(p):
            prop.rejected.append(Rejection(item, f"back-projects to ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m, outside "
                                                 f"the reachable workspace {box}"))
            continue
        prop.pixels[name] = (float(uv[0]), float(uv[1]))
        prop.points[name] = p

    def live_name(n: str) -> str | None:
        if n in (PINCH, *EE_ALIASES):
            return PINCH
        m = name_map.get(n, n)
        return m if m in live else None

    wps = doc.get("waypoints", [])
    if not isinstance(wps, list):
        prop.rejected.append(Rejection("answer", f"'waypoints' must be a list, got {type(wps).__name__}"))
        wps = []
    for i, w in enumerate(wps):
        item = f"waypoint {i}"
        if not isinstance(w, Mapping):
            prop.rejected.append(Rejection(item, f"must be an object, got {w!r}"))
            continue
        point, target = w.get("point"), w.get("target")
        mover = live_name(point) if isinstance(point, str) else None
        if mover is None:
            prop.rejected.append(Rejection(item, f"moving point {point!r} is not tracked live; use 'pinch' or one of "
                                                 f"{sorted(live)} (map names with name_map)"))
            continue
        if not isinstance(target, str):
            prop.rejected.append(Rejection(item, f"target must be a point name, got {target!r}"))
            continue
        try:
            offset = np.asarray(w.get("offset", [0.0, 0.0, 0.0]), dtype=float)
        except (TypeError, ValueError):
            offset = np.zeros(0)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)) or np.linalg.norm(offset) > max_offset:
            prop.rejected.append(Rejection(item, f"offset must be [dx, dy, dz] metres with length <= {max_offset}, "
                                                 f"got {w.get('offset')!r}"))
            continue
        tol = w.get("tolerance", 0.03)
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol <= max_tolerance:
            prop.rejected.append(Rejection(item, f"tolerance must be in (0, {max_tolerance}] m, got {tol!r}"))
            continue
        grip = w.get("gripper")
        if grip not in (None, "open", "closed"):
            prop.rejected.append(Rejection(item, f"gripper must be open, closed or null, got {grip!r}"))
            continue
        tgt_live = live_name(target)
        if tgt_live is not None and tgt_live != PINCH:
            tname, toff, where_now = tgt_live, offset, live[tgt_live] + offset
        elif target in prop.points:
            tname, toff, where_now = BASE, prop.points[target] + offset, prop.points[target] + offset
        else:
            why = next((r.reason for r in prop.rejected if r.item == f"point {target!r}"), "not among the points")
            prop.rejected.append(Rejection(item, f"target {target!r} is not usable ({why})"))
            continue
        if mover == PINCH and not reachable(where_now):
            prop.rejected.append(Rejection(item, f"target position ({where_now[0]:.3f}, {where_now[1]:.3f}, "
                                                 f"{where_now[2]:.3f}) m is outside the reachable workspace {box}"))
            continue
        try:
            prop.waypoints.append(Waypoint.from_dict(
                {"name": str(w.get("name") or f"{point}_to_{target}"), "point": mover, "target": tname,
                 "offset": [float(x) for x in toff], "tolerance": float(tol), "gripper": grip}, item))
        except RewardConfigError as e:
            prop.rejected.append(Rejection(item, str(e)))
    if not wps:
        prop.rejected.append(Rejection("answer", "no waypoints given"))
    return prop


def _pixel(pt: Mapping[str, Any]) -> np.ndarray | None:
    """Accept ``u, v``, ``x, y`` or ``pixel: [u, v]``."""
    if "pixel" in pt:
        raw = pt["pixel"]
    elif "u" in pt and "v" in pt:
        raw = [pt["u"], pt["v"]]
    elif "x" in pt and "y" in pt:
        raw = [pt["x"], pt["y"]]
    else:
        return None
    try:
        uv = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        return None
    if uv.shape != (2,) or not np.all(np.isfinite(uv)):
        return None
    return uv


# ---------------------------------------------------------------------------
# asking the model


def build_messages(task: str, rgb: np.ndarray, live_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    h, w = np.asarray(rgb).shape[:2]
    others = [n for n in live_names if n not in RESERVED]
    tracked = (f"these scene points are also tracked live and may move: {', '.join(others)}" if others
               else "no other point is tracked live")
    live_text = f", or a tracked point ({', '.join(others)})" if others else ""
    text = PROMPT.format(task=task, width=w, height=h, tracked_text=tracked, live_text=live_text)
    return [system_message(SYSTEM_PROMPT), user_message(text, [np.asarray(rgb, dtype=np.uint8)])]


def propose_waypoints(
    client: ChatClient,
    task: str,
    rgb: np.ndarray,
    depth: np.ndarray,
    camera: CameraModel,
    workspace_low: Sequence[float],
    workspace_high: Sequence[float],
    *,
    live: Mapping[str, np.ndarray] | None = None,
    attempts: int = 1,
    **check: Any,
) -> Proposal:
    """Ask the model (up to ``attempts`` times while no waypoint survives) and validate the answer.

    Returns the first proposal with at least one accepted waypoint; raises
    :class:`ProposalError` with every attempt's report when none has one. Transport
    failures (:class:`~rewards.openai_client.LLMError`) propagate after the client's retries.
    """
    messages = build_messages(task, rgb, list(live or {}))
    reports = []
    for k in range(max(1, int(attempts))):
        text = client.chat(messages, n=1).text
        try:
            doc = extract_json(text)
        except ValueError as e:
            prop = Proposal(raw=text, rejected=[Rejection("answer", str(e))])
        else:
            prop = validate_proposal(doc, camera, depth, workspace_low, workspace_high, live=live, raw=text, **check)
        if prop.ok:
            return prop
        reports.append(f"attempt {k + 1}: {prop.report()}")
    raise ProposalError("the model proposed no usable waypoint:\n" + "\n".join(reports))


# ---------------------------------------------------------------------------
# command line

TASK_TEXT = {
    "reach": "move the gripper fingertips to the green goal sphere",
    "push": "push the red block across the table onto the green goal marker",
    "pick_place": "pick up the red block and place it at the green goal marker",
    "drawer_open": "pull the drawer of the blue cabinet open by its handle",
}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Propose keypoint waypoints for a Panda task with a VLM.")
    ap.add_argument("--env-id", default="rewardforge/PandaPickPlace-v0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task-text", default=None, help="default: a description of the Panda task")
    ap.add_argument("--camera", default="front")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--base-url", default="https://api.openai.com/v1")
    ap.add_argument("--model", default="gpt-4o")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="'null' for servers without a key")
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the accepted waypoints to this YAML file")
    args = ap.parse_args(argv)

    import yaml

    import sim
    from rewards.keypoints import render_rgbd

    env = sim.make(args.env_id)
    obs, _ = env.reset(seed=args.seed)
    u = env.unwrapped
    spec = u.embodiment
    rgb, depth, cam = render_rgbd(u.model, u.data, args.camera, args.width, args.height)
    names = list(spec.extra.get("keypoint_names", []))
    live = {n: obs["keypoints"][i] for i, n in enumerate(names) if n != PINCH}
    client = ChatClient(base_url=args.base_url, model=args.model, timeout_s=args.timeout_s, retries=args.retries,
                        api_key_env=None if args.api_key_env in ("null", "none", "") else args.api_key_env)
    text = args.task_text or TASK_TEXT.get(spec.name.split("/")[-1], spec.name)
    prop = propose_waypoints(client, text, rgb, depth, cam, spec.workspace_low, spec.workspace_high,
                             live=live, attempts=args.attempts)
    print(prop.report())
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# proposed by {args.model} for {spec.name} (seed {args.seed}): {text}\n")
            yaml.safe_dump(prop.to_yaml_dict(text), f, sort_keys=False)
        print(f"wrote {args.out}; use it with reward=keypoints reward.params.waypoints={args.out}")
    env.close()


if __name__ == "__main__":
    main()


__all__ = ["Proposal", "ProposalError", "Rejection", "build_messages", "extract_json", "propose_waypoints",
           "validate_proposal"]
