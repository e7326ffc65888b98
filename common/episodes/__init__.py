"""The project's one episode format: LeRobotDataset v3 layout plus a few columns of ours.

Demonstrations (scripted or teleoperated), human interventions recorded on the robot
and policy rollouts are all stored this way, and behaviour cloning, RLPD, success
classifiers and reward relabelling all read it. Public API (kept small and stable;
the ROS recorder node builds on it):

* :class:`DatasetWriter` ``(root, spec, fps=None, cameras=None, crf=18)`` with
  ``begin_episode(task, source, metadata=None)``, ``add_frame(obs, action,
  policy_action=None, intervention=False, reward=0.0, success=False, done=False,
  truncated=False)``, ``end_episode(success=None, final_obs=None) -> index``,
  ``discard_episode()``, ``close()``.
* :class:`Dataset` ``(root)`` with ``episode(i, images=False)``,
  ``observations(i, images=False)``, ``frames(camera)``, ``transitions(images=False)``,
  ``summary()``; ``num_episodes``, ``num_frames``, ``spec``, ``fps``, ``cameras``,
  ``tasks``, ``episodes`` (metadata rows), ``stats``.
* :func:`check_dataset` ``(root) -> (problems, warnings)``; command line
  ``rewardforge-dataset check|summary|repair PATH`` (:func:`common.episodes.cli.main`).

On disk (``root/``)::

    meta/info.json                  codebase_version "v3.0", fps, features, path templates,
                                    totals, splits, and "rewardforge": {format, embodiment, cameras}
    meta/stats.json                 per feature min/max/mean/std/count (images per channel, in [0, 1])
    meta/tasks.parquet              task_index + task text (pandas index "task", as LeRobot writes it)
    meta/episodes/chunk-000/file-000.parquet   one row per episode (1000 rows per file)
    data/chunk-000/file-000.parquet            the frames of episode 0
    videos/observation.images.<camera>/chunk-000/file-000.mp4   its camera stream

Per frame (one control step): ``observation.state`` (the spec's state fields
flattened in declaration order, float32), ``observation.<field>`` for every state field
(flattened to a vector; the spec in info.json has the shape), video features
``observation.images.<camera>``, ``action`` (executed, normalised [-1, 1]),
``action.policy`` (what the policy asked for), ``intervention``, ``next.reward``,
``next.success``, ``next.done``, ``next.truncated`` (ours: time-limit end),
``timestamp`` (= frame_index / fps), ``frame_index``, ``episode_index``, ``index``
(global frame number), ``task_index``.

Per episode (meta/episodes): LeRobot's ``episode_index``, ``tasks``, ``length``,
``data/chunk_index``, ``data/file_index``, ``dataset_from_index``,
``dataset_to_index``, ``videos/<key>/{chunk_index, file_index, from_timestamp,
to_timestamp}``, ``meta/episodes/{chunk_index, file_index}``, ``stats/<feature>/<stat>``;
ours: ``success`` (episode label), ``source`` (expert | noisy | teleop | policy |
intervention), ``interventions`` (frames), ``return`` (sum of rewards),
``final/observation.state`` (the observation after the last action, or null),
``metadata`` (JSON text).

Where we differ from, or could not confirm, LeRobot's own writer:

* LeRobot packs many episodes into each data parquet and mp4, up to a size limit.
  We write one data file and one mp4 per camera per episode (file number = episode
  index), which the layout allows (episodes address their files through
  ``data/*_index`` and ``videos/*``; ``from_timestamp`` is 0). That is what makes a
  crash lose only the episode in progress without rewriting big files.
* Multi-dimensional state fields (keypoints (K, 3)) are stored flattened, because
  LeRobot maps 2-D feature shapes to a ``datasets`` extension type; the spec keeps the shape.
* The final observation's image is one extra frame at the end of an episode's mp4,
  after ``to_timestamp``; LeRobot never queries past ``to_timestamp``.
* Stats: no quantiles (newer LeRobot versions add q01..q99); image stats come from a
  strided subsample of pixels.
* Video: H.264 (libx264, yuv420p, crf 18, GOP 2); LeRobot's default is AV1. Both decode
  with its pyav/torchcodec backends; we have not run LeRobot's loader on our files here
  (see benchmarks/lerobot_reads_ours.py).
* A LeRobot reader globs ``data/*/*.parquet``: right after a crash, a leftover file of
  the unfinished episode could confuse it until the next writer or ``repair`` removes it.
"""

from common.episodes.check import check_dataset
from common.episodes.layout import SOURCES, DatasetError
from common.episodes.reader import Dataset
from common.episodes.writer import DatasetWriter

__all__ = ["SOURCES", "Dataset", "DatasetError", "DatasetWriter", "check_dataset"]
