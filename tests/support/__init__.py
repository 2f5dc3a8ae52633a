"""Helpers shared by the test suites: waiting, processes, child environments, a gateway client.

Test modules import helpers from here (or from a conftest), never from another test module,
so a change to one suite cannot break another.
"""
