"""Conformance scenarios that drive a client and a CloudHSM-like target."""
