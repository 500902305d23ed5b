"""Errors raised by the carto package."""

from __future__ import annotations


class CartoError(Exception):
    """Base class of every error this package raises on purpose."""


class CartoBinaryNotFound(CartoError, FileNotFoundError):
    """No `carto` executable to start an embedded coordinator with."""


class CoordinatorError(CartoError):
    """The coordinator refused a call, or could not be reached."""


class JobAborted(CartoError):
    """The coordinator aborted this rank's assignment, shut the worker down, or
    closed its order stream; the message carries the coordinator's reason."""


class JobFailed(CartoError):
    """The job ended in a state other than succeeded; the message carries
    the job's error."""
