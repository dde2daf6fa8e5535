"""Imported by the fork server of :mod:`harness.isolation` after :mod:`harness._preload` when the run may
call a torch optimizer: ``torch._dynamo``, which ``torch.optim`` imports on the first optimizer it makes (about
1.2 s of CPU). A run whose implementations are all of other frameworks (``check --implementations numpy-hand``)
leaves it out of the server; a worker that makes a torch optimizer after all imports it then, as an inline run
does (the same records, only later).
"""

from __future__ import annotations

from ._preload import stop_if_orphaned

stop_if_orphaned()  # (a run refused at once: see there)
import torch._dynamo  # noqa: E402, F401  (torch.optim imports it lazily, on the first optimizer)
