"""Builders and fakes of our own Protocols, shared by the tests."""
