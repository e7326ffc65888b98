"""Hydra plumbing shared by every command (train, reward evaluation, recording): compose a config in
code, and reject unknown ``key=value`` overrides with the nearest valid key before Hydra does (its
own error is a deep traceback without suggestions)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def schema_keys(node: Any, open_dicts: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Every dotted key of a structured config; keys below ``open_dicts`` are free-form."""
    keys = []
    for k in node:
        path = f"{prefix}{k}"
        keys.append(path)
        child = node._get_node(k)
        if isinstance(child, DictConfig) and path not in open_dicts:
            keys += schema_keys(child, open_dicts, path + ".")
    return keys


def check_overrides(overrides: Sequence[str], schema: DictConfig, groups: Sequence[str],
                    open_dicts: Sequence[str], error: type[Exception]) -> None:
    """Raise ``error`` for the first override naming an unknown key, with a did-you-mean and the
    valid keys at that level. Group choices (``task=...``), additions (``+key=``) and ``hydra.*``
    are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    known = schema_keys(schema, open_dicts)
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (o,) = parser.parse_overrides([text])
        except Exception:  # noqa: BLE001 - malformed overrides are Hydra's to report
            continue
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or key.split(".")[0].split("/")[0] == "hydra" or "/" in key or key in groups:
            continue
        if key in known or any(key.startswith(p + ".") for p in open_dicts):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        siblings = sorted(k for k in known if (k.rsplit(".", 1)[0] if "." in k else "") == parent)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(f"unknown config key {key!r}{hint}. Valid keys here: {', '.join(siblings)}")


def compose(config_dir: str, config_name: str, overrides: Sequence[str] = (), **kwargs: Any) -> DictConfig:
    """Hydra's compose API from any state (a previous initialisation is cleared first)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), **kwargs)


def compose_task_command(config_dir: str, config_name: str, overrides: Sequence[str], keys: Sequence[str],
                         error: type[Exception]) -> tuple[DictConfig, str]:
    """Compose a command config that has a ``task`` group (recording, teleoperation): the config
    without Hydra's own node, and the chosen task's config name. Hydra's errors become ``error``
    listing the valid ``keys``."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(config_dir, config_name, overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise error(f"{err}\nvalid keys: {', '.join(keys)}, task=<name in configs/task/>, task.kwargs.<key>") from err
    choice = str(cfg.hydra.runtime.choices.task)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return OmegaConf.create(plain), choice


def hydra_command(config_dir: str, config_name: str, app: Any, check: Any, errors: tuple[type[Exception], ...]) -> None:
    """Run ``app(cfg)`` as a Hydra command: unknown ``key=value`` overrides (``check``) and config
    errors (``errors``) end with one line ``config error: ...`` and exit status 2, not a traceback."""
    import sys

    def guarded(cfg: DictConfig) -> None:
        try:
            app(cfg)
        except errors as err:
            print(f"config error: {err}", file=sys.stderr)
            sys.exit(2)

    try:
        check([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    except errors as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    import hydra

    hydra.main(config_path=config_dir, config_name=config_name, version_base="1.3")(guarded)()


def output_dir(configured: str | None, fallback: str) -> Path:
    """``configured``, else Hydra's run directory inside a Hydra app, else ``runs/<fallback>/<time>``
    (a command composed in code)."""
    import time

    if configured is not None:
        return Path(configured)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not inside a Hydra app
        return Path("runs") / fallback / time.strftime("%Y-%m-%d_%H-%M-%S")
