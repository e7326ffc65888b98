# HAND-WRITTEN example reward program for rewardforge/PandaReach-v0 (written by a person for tests,
# documentation and as a prompt example; it is NOT the output of a language model).
# It follows the rules generated programs must follow: numpy only, vectorised, a dict of named terms.
import numpy as np


def compute_reward(obs, action, next_obs):
    d = np.linalg.norm(next_obs["ee_pos"] - next_obs["goal_pos"], axis=-1)  # metres
    reach = 1.0 - np.tanh(d / 0.1)  # 1 at the goal, ~0 beyond 20 cm
    success_bonus = (d < 0.03).astype(np.float64)  # the task's success radius
    action_penalty = -0.01 * np.sum(np.square(action[:, :3]), axis=-1)
    return {"reach": reach, "success_bonus": success_bonus, "action_penalty": action_penalty}
