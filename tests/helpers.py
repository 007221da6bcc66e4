"""Small builders and probes shared by the tests."""

from __future__ import annotations

import base64
import io
from typing import Any

import boto3
import redis
from PIL import Image, ImageDraw
from sqlalchemy import Engine, func, select

from services.db.schema import jobs


def make_image(width: int = 64, height: int = 48, fmt: str = "PNG", **save: Any) -> bytes:
    image = Image.new("RGB", (width, height), (30, 90, 160))
    ImageDraw.Draw(image).ellipse((4, 4, width - 4, height - 4), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(image: bytes | None = None, prompt: str = "Describe the image.", **extra: Any):
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_url(image)}})
    body: dict[str, Any] = {
        "model": "loupe-tiny-mllama",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
    }
    body.update(extra)
    return body


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def count_objects(s3: Any, bucket: str) -> int:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    try:
        return int(client.list_objects_v2(Bucket=bucket).get("KeyCount", 0))
    finally:
        client.close()


def queue_length(broker_url: str, queue: str = "inference") -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return int(sum(client.llen(k) for k in client.keys(f"{queue}*") if b"unacked" not in k))
    finally:
        client.close()
