"""Gradient updates per second: hand-written gradients (policies/fused.py) against autograd, same run.

One SAC/RLPD update is what an env step costs UTD times over, so this is the number that decides
whether RLPD's UTD 20 with 10 LayerNorm critics is affordable on a CPU. Both implementations
compute the same losses (tests/test_sac_fused.py checks their gradients agree); here they run on
the same random batches, interleaved round by round so a busy machine slows both alike, and the
median round is reported with the ratio manual / autograd.

Per config two kinds of update: a full one (critic + actor + temperature) and a critic-only one
(the other UTD - 1 updates of each env step).

    uv run --frozen python benchmarks/update_speed.py                  # pick-and-place sizes, 1 thread
    uv run --frozen python benchmarks/update_speed.py --rounds 7 --updates 300
Writes benchmarks/results/update_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from policies.config import compose
from policies.sac import SAC

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {
    "SAC (2 critics)": ["agent=sac"],
    "RLPD (10 LayerNorm critics)": ["agent=rlpd"],
    "RLPD, 2 LayerNorm critics": ["agent=rlpd", "agent.critic_ensemble=2"],
}


def _rate(agent: SAC, batches: list[tuple[torch.Tensor, ...]], update_actor: bool) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        agent.update(*batch, update_actor=update_actor)
    return len(batches) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="panda_pick_place")
    ap.add_argument("--updates", type=int, default=200, help="updates per round and kind")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from policies.train import make_env

    probe_cfg = compose([f"task={args.task}"])
    env = make_env(probe_cfg.task)
    spec = env.unwrapped.embodiment
    obs_dim, act_dim = spec.state_dim, int(env.action_space.shape[0])
    env.close()
    g = torch.Generator().manual_seed(0)
    B = 256
    batches = [(torch.randn(B, obs_dim, generator=g), torch.rand(B, act_dim, generator=g) * 2 - 1,
                torch.randn(B, generator=g), torch.randn(B, obs_dim, generator=g), torch.full((B,), 0.99))
               for _ in range(args.updates)]

    results: dict = {"task": args.task, "obs_dim": obs_dim, "act_dim": act_dim, "batch": B, "threads": args.threads,
                     "updates_per_round": args.updates, "rounds": args.rounds,
                     "loadavg_before": os.getloadavg()[0], "configs": {}}
    for name, overrides in CONFIGS.items():
        agents = {}
        for backward in ("manual", "autograd"):  # the config's own switch (agent.backward)
            torch.manual_seed(0)
            agents[backward] = SAC(obs_dim, act_dim, compose([f"task={args.task}", *overrides,
                                                              f"agent.backward={backward}"]).agent)
        if not agents["manual"]._manual:
            print(f"{name}: not supported by the manual backward, skipped")
            continue
        rates: dict[str, dict[str, list[float]]] = {b: {"full": [], "critic_only": []} for b in agents}
        for _ in range(args.rounds):
            for backward, agent in agents.items():  # interleaved: load changes hit both alike
                rates[backward]["full"].append(_rate(agent, batches, True))
                rates[backward]["critic_only"].append(_rate(agent, batches, False))
        row = {}
        for kind in ("full", "critic_only"):
            m, a = (statistics.median(rates[b][kind]) for b in ("manual", "autograd"))
            row[kind] = {"manual_per_s": m, "autograd_per_s": a, "ratio": m / a}
            print(f"{name:30s} {kind:12s} manual {m:7.1f}/s  autograd {a:7.1f}/s  ratio {m / a:.2f}")
        results["configs"][name] = row
    results["loadavg_after"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "update_speed.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"load average {results['loadavg_before']:.1f} -> {results['loadavg_after']:.1f}; wrote {out}")


if __name__ == "__main__":
    main()
