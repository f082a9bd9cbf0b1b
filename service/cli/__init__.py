"""The ``isvos`` command line. Commands by concern: ``model`` (segment, eval, export, train,
shard, pack), ``services`` (serve, gateway, grpc, worker, submit, stream), ``ops`` (triton,
triton-drain, triton-probe, stack).

Bad input ends with a one-line error and exit code 2 (media / mask problems) or 1 (other
refusals), never a traceback.
"""

from __future__ import annotations

import typer

from isvos.allocator import keep_freed_memory

# Before any thread exists: every thread then allocates from one arena (isvos.allocator).
keep_freed_memory()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ISVOS video object segmentation (embedded engine, evaluation, export, training).",
)

DEFAULT_CONFIG = "lite"
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 1


def fail(message: str, code: int = EXIT_REFUSED) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _resolve_checkpoint(config: str, checkpoint: str | None) -> str | None:
    from service.checkpoints import default_checkpoint

    if checkpoint:
        return checkpoint
    found = default_checkpoint(config)
    if found is None and config != "tiny":
        typer.secho(
            f"warning: no trained checkpoint ships for config {config!r}; the weights are "
            "random and the masks will be meaningless (pass --checkpoint)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return found


def _limits(max_frames: int | None, max_file_mb: float | None):
    import dataclasses

    from service.media.limits import MediaLimits

    limits = MediaLimits()
    if max_frames is not None:
        limits = dataclasses.replace(limits, max_frames=max_frames)
    if max_file_mb is not None:
        limits = dataclasses.replace(limits, max_file_bytes=int(max_file_mb * 1e6))
    return limits


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _settings(**overrides):
    """Settings from ``ISVOS_*`` variables, with the command line's overrides on top
    (nested keys as ``section__field``); a clear message when they are not valid."""
    from pydantic import ValidationError

    from service.settings import Settings

    nested: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition("__")
        if field:
            nested.setdefault(section, {})[field] = value
        else:
            nested[key] = value
    try:
        return Settings(**nested)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid settings: {problems}", EXIT_BAD_INPUT)


def main() -> None:  # pragma: no cover - console entry point
    app()


# The commands, registered on ``app`` by importing their modules.
from service.cli import model, ops, services  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
