"""CLIP reward (rewards/clip.py): the VLM-RM formula, batched encoding, the prompt cache,
``every``, weight loading errors, binding, and a real Panda frame end to end.

No pretrained weights exist on this machine, so a tiny randomly initialised open_clip
model is registered here, saved to a file and loaded through the term's local-checkpoint
path (``params.pretrained``), exactly as an offline user loads real weights.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import rewards
from rewards import RewardConfigError, Transitions
from rewards import clip as rc

TINY = "rf-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tiny_clip")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = d / "tiny.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def params(ckpt: str, **over) -> dict:
    p = {"model": TINY, "pretrained": ckpt, "goal_prompts": ["a robot gripper touching a green ball"],
         "baseline_prompts": ["a robot arm on a table"], "alpha": 0.5, "camera": "front", "image_size": 64,
         "precision": "fp32", "device": "cpu"}
    p.update(over)
    return p


def make(ckpt: str, **over) -> rc.ClipReward:
    return rewards.build({"kind": "clip", "params": params(ckpt, **over)})


def frames(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random images (closer to renders than white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.BILINEAR)) for s in small])


def batch_of(next_frames: np.ndarray, prev_frames: np.ndarray | None = None, steps=None) -> Transitions:
    prev = next_frames if prev_frames is None else prev_frames
    n = len(next_frames)
    return Transitions(obs={"image_front": prev}, action=np.zeros((n, 4), np.float32),
                       next_obs={"image_front": next_frames},
                       episode_step=None if steps is None else np.asarray(steps))


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------
# the formula on hand-made embeddings


def test_alpha0_is_half_squared_distance_and_monotone_in_cosine():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(200, 16)))
    g = unit(rng.normal(size=(3, 16))).mean(0)  # mean of unit goal embeddings: not unit itself
    b = unit(rng.normal(size=(2, 16))).mean(0)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    r = rc.vlm_rm_reward(t(x), t(g), rc.projection(t(g), t(b), 0.0)).numpy()
    np.testing.assert_allclose(r, 1 - 0.5 * np.sum((x - g) ** 2, -1), atol=1e-5)
    cos = x @ g / np.linalg.norm(g)
    assert np.all(np.diff(r[np.argsort(cos)]) > 0)


def test_alpha1_only_the_goal_baseline_direction_counts():
    rng = np.random.default_rng(1)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    g, b = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    d = g - b
    x = unit(rng.normal(size=(5, 16)))
    v = rng.normal(size=(5, 16))
    v -= np.outer(v @ d, d) / (d @ d)  # orthogonal to d
    p1 = rc.projection(t(g), t(b), 1.0)
    r = rc.vlm_rm_reward(t(x), t(g), p1).numpy()
    np.testing.assert_allclose(rc.vlm_rm_reward(t(x + 0.3 * v), t(g), p1).numpy(), r, atol=1e-5)
    assert not np.allclose(rc.vlm_rm_reward(t(x + 0.3 * d), t(g), p1).numpy(), r, atol=1e-3)
    np.testing.assert_allclose(r, 1 - 0.5 * ((x - g) @ d) ** 2 / (d @ d), atol=1e-5)
    # in between: the matrix written out
    a = 0.3
    P = a * np.outer(d, d) / (d @ d) + (1 - a) * np.eye(16)
    np.testing.assert_allclose(rc.vlm_rm_reward(t(x), t(g), rc.projection(t(g), t(b), a)).numpy(),
                               1 - 0.5 * np.sum(((x - g) @ P) ** 2, -1), atol=1e-5)
    with pytest.raises(ValueError, match="same vector"):
        rc.projection(t(g), t(g), 0.5)


# ---------------------------------------------------------------------------
# the term with a tiny model


def test_term_attributes_and_components(ckpt):
    term = make(ckpt, camera="side", image_size=96)
    assert term.requires == ("image_side",) and term.render_size == 96 and term.batched
    assert term.name == "clip"
    fr = frames(3, 96)
    out = term(Transitions(obs={"image_side": fr}, action=np.zeros((3, 4)), next_obs={"image_side": fr[::-1]}))
    assert set(out.components) == {"similarity", "baseline_similarity", "reward", "scored"}
    # the *next* observation's frame is scored
    x = term.encoder.encode_frames(fr[::-1].copy())
    np.testing.assert_allclose(out.components["similarity"],
                               (x @ torch.nn.functional.normalize(term.goal, dim=0)).numpy(), atol=1e-5)
    np.testing.assert_allclose(out.reward, rc.vlm_rm_reward(x, term.goal, term.proj).numpy(), atol=1e-5)


def test_batched_encoding_equals_one_by_one(ckpt):
    term = make(ckpt, batch_size=3)
    fr = frames(7, seed=3)
    calls = []
    orig = term.encoder.model.encode_image
    term.encoder.model.encode_image = lambda x, **kw: (calls.append(len(x)), orig(x, **kw))[1]
    out = term(batch_of(fr))
    assert calls == [3, 3, 1]  # chunked to batch_size
    one = np.concatenate([term(batch_of(fr[i:i + 1])).reward for i in range(len(fr))])
    np.testing.assert_allclose(out.reward, one, rtol=0, atol=1e-5)
    # and the model sees what open_clip's own PIL preprocessing produces
    cfg = open_clip.get_model_preprocess_cfg(term.encoder.model)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pil = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    for size in (64, 96):  # already model-sized, and resized (bicubic, antialiased)
        f = frames(2, size, seed=size)
        ref = torch.stack([pil(Image.fromarray(x)) for x in f])
        mine = term.encoder.preprocess(f)
        assert mine.shape == (2, 3, 64, 64)
        # at most one uint8 level apart (rounding of the resampled pixels)
        assert (ref - mine).abs().max().item() <= 1.01 / (255 * min(cfg["std"]))
    f = frames(1, 80)[:, :, 8:72]  # 80 x 64: shortest side to 64, centre crop
    np.testing.assert_allclose(term.encoder.preprocess(f).numpy(), pil(Image.fromarray(f[0]))[None].numpy(),
                               atol=1.01 / (255 * min(cfg["std"])))


def test_prompt_embeddings_are_computed_once(ckpt):
    model, tok = rc.load_open_clip(TINY, ckpt, device=torch.device("cpu"), precision="fp32")
    counts = {"tok": 0, "text": 0}

    def tokenizer(texts):
        counts["tok"] += 1
        return tok(texts)

    orig = model.encode_text

    def encode_text(tokens, **kw):
        counts["text"] += 1
        return orig(tokens, **kw)

    model.encode_text = encode_text
    enc = rc.ClipEncoder(model, tokenizer, device=torch.device("cpu"), precision="fp32")
    term = rc.ClipReward(enc, ["goal one", "goal two"], ["baseline"], alpha=0.5, image_size=64)
    assert counts == {"tok": 1, "text": 1}
    for _ in range(2):
        term(batch_of(frames(2)))
    other = rc.ClipReward(enc, ["goal two"], ["baseline"], alpha=1.0, image_size=64)  # same encoder: cached
    other(batch_of(frames(2)))
    assert counts == {"tok": 1, "text": 1}
    # the cache holds the right vectors
    fresh = torch.nn.functional.normalize(orig(tok(["goal two"])).float(), dim=-1)[0]
    torch.testing.assert_close(enc.encode_texts(["goal two"])[0], fresh)


def test_every_holds_the_last_scored_frame_of_the_same_episode(ckpt):
    term, full = make(ckpt, every=3), make(ckpt)
    T, E = 7, 2
    seq = frames(E * (T + 1), seed=5).reshape(E, T + 1, 64, 64, 3)  # seq[e, s] = frame of env e at step s
    order = [(s, e) for s in range(T) for e in range(E)]  # step-major, as the training loop concatenates
    prev = np.stack([seq[e, s] for s, e in order])
    nxt = np.stack([seq[e, s + 1] for s, e in order])
    steps = [s for s, _ in order]
    seen = []
    orig = term.encoder.encode_frames
    term.encoder.encode_frames = lambda f: (seen.append(len(f)), orig(f))[1]
    out = term(batch_of(nxt, prev, steps))
    ref = full(batch_of(nxt, prev, steps)).reward
    row = {k: i for i, k in enumerate(order)}
    for (s, e), i in row.items():
        src = row[(s - s % 3, e)]
        assert out.reward[i] == pytest.approx(ref[src], abs=1e-6), (s, e)
        assert out.components["scored"][i] == float(s % 3 == 0)
    assert seen == [6]  # steps 0, 3, 6 of two envs; nothing else was encoded
    assert not np.isclose(out.reward[row[(1, 0)]], out.reward[row[(1, 1)]])  # envs not mixed up

    # a batch that starts mid-episode: the first unaligned frame has no predecessor, so it is scored
    part = [row[(s, 0)] for s in (4, 5, 6)]
    o2 = term(batch_of(nxt[part], prev[part], [4, 5, 6]))
    np.testing.assert_allclose(o2.components["scored"], [1, 0, 1])
    np.testing.assert_allclose(o2.reward, ref[[row[(4, 0)], row[(4, 0)], row[(6, 0)]]], atol=1e-6)

    with pytest.raises(ValueError, match="episode_step"):
        term(batch_of(nxt, prev))


def test_bf16_precision_runs_in_bf16_and_stays_close(ckpt):
    t32, t16 = make(ckpt), make(ckpt, precision="bf16")
    assert t16.encoder.model.visual.conv1.weight.dtype == torch.bfloat16
    fr = frames(4, seed=9)
    x32, x16 = t32.encoder.encode_frames(fr), t16.encoder.encode_frames(fr)
    assert x16.dtype == torch.float32 and torch.all((x32 * x16).sum(-1) > 0.98)
    np.testing.assert_allclose(t16(batch_of(fr)).reward, t32(batch_of(fr)).reward, atol=0.03)


def test_precision_auto_follows_the_cpu(monkeypatch):
    from common import hardware

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert rc.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert rc.resolve_precision("auto", cpu) == "fp32"
    assert rc.resolve_precision("fp16", cpu) == "fp16"


# ---------------------------------------------------------------------------
# errors


def test_missing_checkpoint_file_names_the_key(ckpt, tmp_path):
    with pytest.raises(RewardConfigError, match=r"params\.pretrained=.*nope\.pt.*(file|path)") as e:
        make(ckpt, pretrained=str(tmp_path / "nope.pt"))
    assert "tags" in str(e.value)


def test_missing_tag_weights_offline_names_the_key_and_does_not_download(ckpt, tmp_path, monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)  # read at import; the env var alone is too late
    attempts = []

    def no_network(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    with pytest.raises(RewardConfigError) as e:
        make(ckpt, model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "hf"), image_size=224)
    msg = str(e.value)
    assert "params.pretrained='openai': could not fetch" in msg and "path" in msg and "timm/vit_base_patch32_clip_224.openai" in msg
    assert attempts == []


@pytest.mark.parametrize(("over", "match"), [
    ({"alpha": 1.5}, r"params\.alpha"),
    ({"alpha": 0.5, "baseline_prompts": []}, r"params\.baseline_prompts"),
    ({"goal_prompts": None}, r"params\.goal_prompts"),
    ({"precision": "int8"}, r"params\.precision.*fp32"),
    ({"device": "tpu"}, r"params\.device"),
    ({"every": 0}, r"params\.every"),
    ({"camra": "front"}, r"unknown params \['camra'\]"),
    ({"model": "ViT-Nope"}, r"params\.model"),
    ({"pretrained": None}, r"params\.pretrained"),
])
def test_bad_params_name_the_key(ckpt, over, match):
    with pytest.raises(RewardConfigError, match=match):
        make(ckpt, **over)


def test_bind_fails_when_the_camera_is_missing(ckpt):
    import sim

    env = sim.make("rewardforge/PandaReach-v0")  # no cameras: no image_front
    spec = env.unwrapped.embodiment
    env.close()
    with pytest.raises(RewardConfigError, match=r"image_front.*cameras"):
        rewards.build({"kind": "clip", "params": params(ckpt)}, spec)
    term = make(ckpt)
    fr = frames(1)
    with pytest.raises(KeyError, match=r"params\.camera='front'"):
        term(Transitions(obs={"image_side": fr}, action=np.zeros((1, 4)), next_obs={"image_side": fr}))


# ---------------------------------------------------------------------------
# config and a real frame


def test_yaml_config_builds_and_drives_the_task_kwargs(ckpt):
    from policies.config import compose
    from policies.train import build_reward, task_for_reward

    cfg = compose(["task=panda_reach", "reward=clip", f"reward.params.model={TINY}",
                   f"reward.params.pretrained={ckpt}", "reward.params.image_size=64"])
    assert cfg.reward.params.camera == "front" and cfg.reward.params.every == 1
    assert list(cfg.reward.params.goal_prompts) and list(cfg.reward.params.baseline_prompts)
    term = build_reward(cfg)
    assert isinstance(term, rc.ClipReward) and term.alpha == cfg.reward.params.alpha
    task = task_for_reward(cfg.task, term)
    assert list(task.kwargs.cameras) == ["front"] and task.kwargs.image_size == 64


def test_panda_frame_end_to_end(ckpt):
    import sim
    import sim.gl
    from sim.panda.experts import make_expert

    sim.gl.before_gl_context()
    env = sim.make("rewardforge/PandaReach-v0", cameras=("front",), image_size=64)
    try:
        term = rewards.build({"kind": "clip", "params": params(ckpt, every=2)}, env.unwrapped.embodiment)
        obs, _ = env.reset(seed=0)
        act = make_expert(env)
        rows = []
        for step in range(3):
            a = act(obs)
            nxt, r, *_ = env.step(a)
            rows.append(Transitions(obs={k: v[None] for k, v in obs.items()}, action=a[None],
                                    next_obs={k: v[None] for k, v in nxt.items()},
                                    episode_step=np.array([step])))
            obs = nxt
    finally:
        env.close()
    batch = Transitions.concat(rows)
    assert batch.next_obs["image_front"].shape == (3, 64, 64, 3)
    out = rewards.relabel(term, batch)
    assert out.reward.shape == (3,) and np.all(np.isfinite(out.reward))
    np.testing.assert_allclose(out.components["scored"], [1, 0, 1])
    assert out.reward[1] == out.reward[0] and np.all(np.abs(out.components["similarity"]) <= 1 + 1e-5)
