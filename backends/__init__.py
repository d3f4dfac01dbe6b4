"""Backends that compile the IR to running code, registered under the `netdsl.backends` entry-point group."""
