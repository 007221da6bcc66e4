"""/v1/files: upload an image once, then name it in jobs as
``{"type": "image_file", "image_file": {"file_id": "file_..."}}``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.api.auth import Authenticate, current_key
from services.errors import InvalidInput, UnsupportedMediaType
from services.files.service import FileService, file_to_public
from services.files.store import StoredFile

MAX_PAGE = 100
#: OpenAI's upload ``purpose`` values Loupe takes: its files are images for jobs.
PURPOSES = ("vision",)


def blueprint(files: FileService, authenticate: Authenticate) -> Blueprint:
    """The file routes over ``files``."""
    bp = Blueprint("files", __name__, url_prefix="/v1/files")
    bp.before_request(authenticate)

    def public(file: StoredFile) -> dict[str, object]:
        return file_to_public(file, files.expires_at(file))

    @bp.post("")
    def upload_file() -> tuple[Response, int, dict[str, str]]:
        """multipart/form-data with one ``file`` field (an image)."""
        if request.mimetype != "multipart/form-data":
            raise UnsupportedMediaType(
                "Upload a file as multipart/form-data with a `file` field.",
                code="unsupported_media_type",
            )
        unknown = (set(request.form) | set(request.files)) - {"file", "purpose"}
        if unknown:
            raise InvalidInput(
                f"Unknown form fields: {', '.join(sorted(unknown))}.", code="invalid_parameter"
            )
        if request.form.get("purpose", PURPOSES[0]) not in PURPOSES:
            raise InvalidInput(
                f"purpose must be one of: {', '.join(PURPOSES)}.", code="invalid_parameter"
            )
        uploads = request.files.getlist("file")
        if len(uploads) != 1:
            raise InvalidInput("Send exactly one `file` field.", code="invalid_parameter")
        upload = uploads[0]
        try:
            data = upload.read()
        finally:
            upload.close()  # a large part spills to a temporary file: close it now
        file = files.upload(current_key().id, data, upload.filename)
        return jsonify(public(file)), 201, {"Location": f"/v1/files/{file.id}"}

    @bp.get("")
    def list_files() -> Response:
        """The key's files, newest first: ``?limit=`` (1-100, default 20) and
        ``?after=<file id>``."""
        unknown = set(request.args) - {"limit", "after"}
        if unknown:
            raise InvalidInput(
                f"Unknown query parameters: {', '.join(sorted(unknown))}.", code="invalid_parameter"
            )
        raw = request.args.get("limit", "20")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE}.", code="invalid_parameter")
        page, has_more = files.list(current_key().id, int(raw), _after())
        return jsonify(
            {
                "object": "list",
                "data": [public(file) for file in page],
                "has_more": has_more,
                "last_id": page[-1].id if page else None,
            }
        )

    @bp.get("/<file_id>")
    def get_file(file_id: str) -> Response:
        return jsonify(public(files.get(current_key().id, file_id)))

    @bp.get("/<file_id>/content")
    def file_content(file_id: str) -> Response:
        """The file's image bytes, as uploaded."""
        file, data = files.content(current_key().id, file_id)
        return Response(
            data,
            mimetype=file.image.content_type,
            headers={
                "Cache-Control": "private, max-age=3600",
                "ETag": f'"{file.image.sha256}"',
                "Content-Disposition": _disposition(file),
            },
        )

    @bp.delete("/<file_id>")
    def delete_file(file_id: str) -> Response:
        files.delete(current_key().id, file_id)
        return jsonify({"id": file_id, "object": "file", "deleted": True})

    return bp


INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Types browsers show as images and never as anything else; other downloads are attachments."""


def _disposition(file: StoredFile) -> str:
    """``inline`` for a decoded image of a type in :data:`INLINE_TYPES`, else ``attachment``;
    named by the file's id (the uploaded name is the client's text, never put in a header)."""
    kind = "inline" if file.image.content_type in INLINE_TYPES else "attachment"
    extension = file.image.content_type.partition("/")[2]
    return f'{kind}; filename="{file.id}.{extension}"'


def _after() -> str | None:
    """``?after=``: a file id, or absent; empty is a 422, as an empty ``cursor`` on /v1/jobs."""
    after = request.args.get("after")
    if after == "":
        raise InvalidInput(
            "after must be a file id; leave it out for the first page.", code="invalid_parameter"
        )
    return after
