"""Scripted reward programs shared by the reward-code tests: one good, and the hostile/broken ones
the issue lists. All are written by hand for the tests (they stand in for model output)."""

GOOD = '''import numpy as np


def compute_reward(obs, action, next_obs):
    d = np.linalg.norm(next_obs["ee_pos"] - next_obs["goal_pos"], axis=-1)
    return {"reach": 1.0 - np.tanh(d / 0.1), "success_bonus": (d < 0.03) * 1.0}
'''
BROKEN = "import numpy as np\n\ndef compute_reward(obs, action, next_obs)\n    return np.zeros(len(action))\n"
CONSTANT = "import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n    return np.ones(len(action))\n"
NAN = ("import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n"
       "    d = np.linalg.norm(next_obs['ee_pos'] - next_obs['goal_pos'], axis=-1)\n"
       "    return {'reach': -d, 'bad': np.log(d - 10.0)}\n")
IMPORT_OS = "import os\n\ndef compute_reward(obs, action, next_obs):\n    return os.getpid()\n"
OPEN = "def compute_reward(obs, action, next_obs):\n    return open('/etc/passwd').read()\n"
DUNDER_IMPORT = "def compute_reward(obs, action, next_obs):\n    return __import__('os').system('true')\n"
LOOP = ("def compute_reward(obs, action, next_obs):\n    x = 0\n    while True:\n        x += 1\n    return x\n")
# passes the static whitelist (for-range loop with a computed bound): only the sandbox can stop it
LOOP_HIDDEN = ("import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n    x = 0\n    n = 10 ** 6\n"
               "    for i in range(n * n):\n        x += i\n    return np.zeros(len(action)) + x\n")
MEMORY_BOMB = ("import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n"
               "    big = np.ones((1 << 36,), np.uint8)\n    return big[:len(action)] * 1.0\n")
# a list that grows without numpy's allocation check: ends by RLIMIT_AS / MemoryError
MEMORY_BOMB_LIST = ("def compute_reward(obs, action, next_obs):\n    x = [0]\n    for i in range(60):\n"
                    "        x = x + x\n    return x\n")


def fenced(src: str, prose: str = "Here is the reward:") -> str:
    return f"{prose}\n\n```python\n{src}```\nThis rewards getting close."
