"""WSGI entry point: ``gunicorn services.api.wsgi:app``; the API process's composition root."""

import atexit

from services.api.app import create_app
from services.api.root import build_api
from services.settings import load_settings

root = build_api(load_settings())
atexit.register(root.close)  # the process's pools and threads end with it
app = create_app(root)
