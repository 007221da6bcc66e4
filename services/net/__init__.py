"""Outbound HTTP to user-supplied URLs (webhooks, image URLs), behind one SSRF guard."""
