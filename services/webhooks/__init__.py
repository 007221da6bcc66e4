"""Signed, retried, auditable webhooks (Standard Webhooks): events, secrets, the SSRF guard.

Delivery itself (the signed POST and the retry decision) runs on the ``webhooks`` Celery queue in
``workers/webhooks.py``; this package holds what the API and the workers share, the retry
schedule in SQL among it (``dispatch.py``).
"""
