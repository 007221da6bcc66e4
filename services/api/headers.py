"""Security headers on every response, set in one ``after_request`` hook.

Every answer gets ``nosniff``, a ``Referrer-Policy`` and a CSP that forbids framing. HTML pages
(``/admin``, ``/docs``) get a CSP that loads scripts, styles and data from Loupe itself only, with
no inline script. Anything else (JSON, CSV, image bytes) gets ``default-src 'none'`` and a
sandbox, so a file that is also HTML (a PNG+HTML polyglot) can never run as a page of ours.
"""

from __future__ import annotations

from flask import Flask, Response

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""For Loupe's own HTML pages: their scripts and styles are files served by Loupe."""
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
"""For everything that is not one of our pages: nothing in it may load or run."""

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "Cross-Origin-Resource-Policy": "same-origin",
    # API answers are per key and may carry secrets (a new key, a signing secret): nothing is
    # cached unless its route says so (image downloads do).
    "Cache-Control": "no-store",
}


def register_security_headers(app: Flask) -> None:
    """Add the headers to every response of ``app``, errors included; a header a route set
    itself (``Cache-Control`` on a download, say) is kept."""
    app.after_request(secure)


def secure(response: Response) -> Response:
    """``response`` with the security headers it does not already carry."""
    csp = PAGE_CSP if response.mimetype == "text/html" else DATA_CSP
    for name, value in {**_ALWAYS, "Content-Security-Policy": csp}.items():
        response.headers.setdefault(name, value)
    return response
