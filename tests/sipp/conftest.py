"""Fixtures shared by the SIPp suites: a real DNS server (dnsmasq)."""

from tests.dnskit import dnsmasq_factory  # noqa: F401
