"""Loupe messages in the Hugging Face chat-template format, shared by every engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.errors import EngineError
from services.types import Message


def to_chat(
    messages: Sequence[Message], image_count: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """Messages in the chat-template format, and the image indices in placeholder order.

    Raises ``EngineError`` (``invalid_prompt``) for a reference to a missing image or an unknown
    content part.
    """
    conversation: list[dict[str, Any]] = []
    order: list[int] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if part.type == "image":
                if not 0 <= part.image_index < image_count:
                    raise EngineError(
                        f"message refers to image {part.image_index} but the request has "
                        f"{image_count} image(s)",
                        code="invalid_prompt",
                    )
                parts.append({"type": "image"})
                order.append(part.image_index)
            elif part.type == "text":
                parts.append({"type": "text", "text": part.text})
            else:
                raise EngineError(f"unknown content part type {part.type!r}", code="invalid_prompt")
        conversation.append({"role": message.role, "content": parts})
    return conversation, order
