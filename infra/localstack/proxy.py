"""nginx in front of the local API, from the repository's one template.

``infra/nginx/loupe.conf.template`` is the front proxy's whole policy (timeouts, size limits,
buffering, JSON error pages); docker-compose.yml hands it to the official nginx image, which
fills its ``${LOUPE_*}`` placeholders with envsubst. Here :func:`render_template` fills them
the same way and :func:`write_config` wraps the result in the process plumbing a private,
unprivileged nginx needs: pid file, temp dirs and logs inside one work directory, nothing
outside it touched. :func:`infra.localstack.parts.proxy_part` runs it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.localstack.servers import ServerStartError

TEMPLATE = Path(__file__).resolve().parents[1] / "nginx" / "loupe.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(LOUPE_[A-Z0-9_]+)\}")
_SYSTEM_SBIN = "/usr/sbin:/usr/local/sbin:/sbin:/opt/homebrew/bin:/usr/local/bin"
"""Where nginx lives when a user's PATH lacks the sbin directories (Debian's, for non-root)."""
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class ProxyConfig:
    """The template's inputs: where nginx listens, where gunicorn is, the API's size limit."""

    listen: str
    """What ``listen`` takes: ``"127.0.0.1:8080"`` or ``"8000"``."""
    upstream: str
    """gunicorn's ``host:port``."""
    max_request_bytes: int
    """``client_max_body_size``: the API's own ``LOUPE_MAX_REQUEST_BYTES``."""

    def values(self) -> dict[str, str]:
        """The template's placeholders, named as compose's environment names them."""
        return {
            "LOUPE_PROXY_LISTEN": self.listen,
            "LOUPE_API_UPSTREAM": self.upstream,
            "LOUPE_MAX_REQUEST_BYTES": str(self.max_request_bytes),
        }


def render_template(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every ``${LOUPE_*}`` replaced from ``values``, as the nginx image's
    envsubst does; nginx's own ``$variables`` stay. KeyError names a placeholder with no value."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def find_nginx() -> Path:
    """The ``nginx`` binary on PATH or in the usual sbin directories; ServerStartError if none."""
    found = shutil.which("nginx") or shutil.which("nginx", path=_SYSTEM_SBIN)
    if found is None:
        raise ServerStartError(
            "no nginx binary: install Debian's nginx (apt-get install -y nginx, or `make nginx`)"
        )
    return Path(found)


def write_config(workdir: Path, config: ProxyConfig) -> Path:
    """Write ``workdir/loupe.conf`` (the template, filled) and ``workdir/nginx.conf`` (plumbing
    that includes it); return the latter. Everything nginx writes stays inside ``workdir``."""
    for name in _TEMP_DIRS:
        (workdir / "temp" / name).mkdir(parents=True, exist_ok=True)
    site = workdir / "loupe.conf"
    site.write_text(render_template(TEMPLATE.read_text(), config.values()))
    main = workdir / "nginx.conf"
    main.write_text(_main_config(workdir, site))
    return main


def _main_config(workdir: Path, site: Path) -> str:
    temp_paths = "".join(
        f"    {name}_temp_path {workdir / 'temp' / name};\n" for name in _TEMP_DIRS
    )
    return (
        "# Written by infra/localstack/proxy.py: process plumbing only; the proxy is loupe.conf.\n"
        f"{_user_line()}worker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        "error_log stderr warn;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n    access_log /dev/stdout;\n"
        f"{temp_paths}    include {site};\n}}\n"
    )


def _user_line() -> str:
    """Workers run as whoever runs nginx: as root, nginx would otherwise switch them to
    ``nobody``, who cannot write the private temp dirs (a buffered upload would fail)."""
    if os.geteuid() != 0:
        return ""  # an unprivileged master cannot switch users; nginx warns about the directive
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def nginx_argv(binary: Path, workdir: Path, config: Path) -> tuple[str, ...]:
    """nginx in the foreground (a child we can stop), prefix ``workdir``, errors on stderr from
    the first line on (before the config names a log)."""
    return (str(binary), "-p", str(workdir), "-e", "stderr", "-c", str(config), "-g", "daemon off;")
