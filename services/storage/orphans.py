"""Taking back an image a refused request stored, without breaking a request that shares it.

Images are content-addressed: two requests carrying the same bytes store the same object. A
request refused after its image was stored (an ``Idempotency-Key`` lost to a concurrent submit,
a database that failed the insert) hands it to :func:`discard_unless_kept`, which deletes the
object only when no job or file names it, and asks that twice:

1. before the delete: a job or file committed earlier keeps the object;
2. after the delete: a row committed since then (another request that stored the same bytes and
   committed while we deleted) gets the object put back, from the same bytes we hold.

One interleaving is left: a request that stored the same bytes before our delete and commits
its row only after our second check. Both of its steps must straddle our delete and recheck, a
few milliseconds, and it needs identical bytes submitted concurrently with a refusal; its job
then fails ``image_missing`` at the worker, a clear error, never a wrong answer. Closing it too
would cost every submit an extra object-store round trip after its commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.errors import LoupeError
from services.storage.blobs import BlobStore
from services.storage.images import ValidatedImage

log = logging.getLogger("loupe.storage")

KeptBy = Callable[[str], bool]
"""Whether a job or a file names the image stored under this key."""


def discard_unless_kept(blobs: BlobStore, image: ValidatedImage, kept: KeptBy) -> bool:
    """Delete ``image``'s object unless ``kept`` says something uses it; True if it is gone.

    Never raises: the caller is handling a refusal, and that refusal is the client's answer. An
    object that cannot be checked or deleted stays (logged): a spare object costs storage, a
    missing one costs a job.
    """
    key = image.ref.key
    try:
        if kept(key):
            return False
        blobs.delete(key)
        if kept(key):  # a request with the same bytes committed while we deleted
            blobs.put(key, image.data, image.ref.content_type)
            return False
    except LoupeError as exc:
        log.warning("image %s of a refused request may stay: %s", key, exc.message)
        return False
    return True
