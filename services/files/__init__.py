"""Uploaded files: an image uploaded once (``POST /v1/files``) and named by id in later jobs."""
