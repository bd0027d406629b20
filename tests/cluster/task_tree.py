"""Every trio task's await chain, printed when a cluster test overruns its bound: a hang
in CI then says where it was, instead of only that it happened."""

from __future__ import annotations

import sys

import trio


def await_chain(task: trio.lowlevel.Task) -> str:
    frames = []
    coro = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(frames)


def dump_tasks(task: trio.lowlevel.Task | None = None, depth: int = 0) -> None:
    task = task or trio.lowlevel.current_root_task()
    if task is None:
        return
    print("  " * depth + f"{task.name}: {await_chain(task)}", file=sys.stderr)
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            dump_tasks(child, depth + 1)
