"""Cloning probe for pick-and-place: how good is behaviour cloning alone on a demo set, and where
does it fail (goals on the table vs raised goals)?

It clones the way ``rewardforge-train bc_steps=N obs_norm=demos`` does: a tanh-Gaussian actor whose
input is standardised by the demos' statistics, fitted by squared error on the deterministic action.
It then scores the clone on the same fresh episodes as ``rlpd_demos.py``'s final re-evaluation. No
trainer, replay or critics are involved, so one probe takes ~3 min on one core. That makes it the
quick way to compare demo sets and input features before paying for an RL run::

    uv run --frozen python benchmarks/clone_probe.py --record-seed 50000 --seeds 0 1
    uv run --frozen python benchmarks/clone_probe.py --record-seed 51000 --features relative

``--features relative`` appends block - fingertips, goal - block and goal - fingertips to the state;
``--fields`` keeps only the named state fields. ``--ensemble K`` clones K times (seeds s, s+1, ...,
s+K-1 for each ``--seeds`` entry s) and scores the first clone alone and the mean of the K clones'
deterministic actions, on the same episodes: a clone of 20 demos varies a lot with its seed, and
averaging is the cheapest way to take that variance out::

    uv run --frozen python benchmarks/clone_probe.py --record-seed 52000 --ensemble 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rlpd_demos import FINAL_EVAL_SEED  # noqa: E402

from common.episodes import Dataset  # noqa: E402
from common.spec import EmbodimentSpec, flatten_state, unflatten_state  # noqa: E402
from policies.networks import CloneEnsemble, TanhGaussianActor  # noqa: E402
from policies.pixels import PixelObs  # noqa: E402


def features(spec: EmbodimentSpec, states: np.ndarray, kind: str, keep: EmbodimentSpec | None = None) -> np.ndarray:
    """The state vectors (only ``keep``'s fields if given), with the three relative positions
    appended for ``kind="relative"``."""
    states = np.asarray(states, np.float32)
    named = unflatten_state(spec, states)
    kept = states if keep is None else flatten_state(keep, named)
    if kind == "absolute":
        return kept
    ee, block, goal = (named[k] for k in ("ee_pos", "object_pos", "goal_pos"))
    return np.concatenate([kept, block - ee, goal - block, goal - ee], axis=-1)


def clone(dataset: Dataset, kind: str, seed: int, steps: int, keep: EmbodimentSpec | None = None,
          batch: int = 256) -> TanhGaussianActor:
    tr = dataset.transitions(images=False)
    x = torch.from_numpy(features(dataset.spec, tr["state"], kind, keep))
    a = torch.from_numpy(np.asarray(tr["action"], np.float32))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    actor = TanhGaussianActor(x.shape[1], a.shape[1], (256, 256))
    actor.obs_norm.set(x.mean(0), x.std(0))
    opt = torch.optim.Adam(actor.parameters(), 3e-4)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), batch))
        loss = actor.action_error(x[idx], a[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return actor


def score(actor: TanhGaussianActor | CloneEnsemble, spec: EmbodimentSpec, kind: str, episodes: int, first_seed: int,
          keep: EmbodimentSpec | None = None) -> dict:
    """Success (at any step, as training's evaluation counts it) overall, on table goals and on raised goals."""
    from omegaconf import OmegaConf

    from policies.train import evaluate, make_env

    env = make_env(OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/task/panda_pick_place.yaml"))
    wins, table = np.zeros(episodes, bool), np.zeros(episodes, bool)

    def track(ep: int, info: dict) -> None:
        u = env.unwrapped
        table[ep] = u.goal[2] - u.block_half < 0.01
        wins[ep] |= bool(info.get("success", False))

    def act(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.act(torch.from_numpy(x), True).numpy()

    try:
        success = evaluate(act, env, spec, episodes, first_seed, on_step=track,
                           prepare=lambda o: features(spec, flatten_state(spec, o), kind, keep)[None])[0]
    finally:
        env.close()
    w, t = wins, table
    return {"success": success, "table": f"{w[t].sum()}/{t.sum()}", "raised": f"{w[~t].sum()}/{(~t).sum()}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--demos", help="an existing pick-and-place dataset")
    src.add_argument("--record-seed", type=int, help="record --episodes-demo expert demos from this env seed")
    ap.add_argument("--episodes-demo", type=int, default=20)
    ap.add_argument("--features", choices=["absolute", "relative"], default="absolute")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=20000, help="cloning steps (the recipe's bc_steps)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--first-episode-seed", type=int, default=FINAL_EVAL_SEED)
    ap.add_argument("--ensemble", type=int, default=1, metavar="K", help="also score the mean of K clones")
    ap.add_argument("--fields", nargs="+", help="state fields the clone sees, kept in the spec's order (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demos:
            path = Path(args.demos)
        else:
            from sim.record import compose, record

            path = Path(tmp) / "demos"
            cfg, choice = compose(["task=panda_pick_place", f"episodes={args.episodes_demo}", f"out={path}",
                                   f"seed={args.record_seed}", "progress=false"])
            record(cfg, choice)
        ds = Dataset(path)
        goals = [float(ds.episode(i)["observation.goal_pos"][0][2]) for i in range(ds.num_episodes)]
        print(f"{ds.num_episodes} demos from {path}; goals on the table: {sum(g < 0.035 for g in goals)}")
        # the field selection agents use (agent.state_fields), which also rejects unknown names
        keep = PixelObs(ds.spec, (), args.fields).state_spec if args.fields else None
        for seed in args.seeds:
            actors = [clone(ds, args.features, seed + k, args.steps, keep) for k in range(args.ensemble)]
            policies = [(f"seed {seed}", actors[0])]
            if args.ensemble > 1:
                policies.append((f"mean of seeds {seed}-{seed + args.ensemble - 1}", CloneEnsemble(actors)))
            for name, policy in policies:
                r = score(policy, ds.spec, args.features, args.episodes, args.first_episode_seed, keep)
                print(f"features={args.features} fields={args.fields or 'all'} {name}: success {r['success']:.2f} "
                      f"(table goals {r['table']}, raised goals {r['raised']})", flush=True)


if __name__ == "__main__":
    main()
