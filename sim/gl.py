"""Load order for OpenGL contexts in processes that also train with torch.

MuJoCo renders headless through EGL, which on a machine without a GPU is Mesa's
llvmpipe, and llvmpipe brings its own copy of LLVM. torch's CUDA wheels ship
``triton``, which brings another LLVM, and every ``torch.optim`` optimiser imports
it (through ``torch._dynamo``). Loading triton *after* llvmpipe crashes the process
with a segmentation fault; loading it *before* works. So every place in ``sim`` that
creates a GL context calls :func:`before_gl_context` first. The cost is paid once,
about 0.4 s, and only by processes that render.
"""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def before_gl_context() -> None:
    """Import triton now, if it is installed, so a later import cannot clash with llvmpipe."""
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
