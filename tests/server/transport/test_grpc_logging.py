"""grpc's own log lines: a client's leaving is one INFO line, never an ERROR with a traceback."""

from __future__ import annotations

import logging

import pytest


def test_a_status_its_client_left_before_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    """grpc's ERROR with a traceback for a finished call's status that could not be sent (its client went away a
    moment before grpc noticed) becomes one INFO line naming the method; other records of grpc pass unchanged."""
    from grpc._cython.cygrpc import ExecuteBatchError

    from server.transport.grpc_options import GRPC_CORE_LOGGER, quiet_client_gone

    quiet_client_gone()
    quiet_client_gone()  # once only
    logger = logging.getLogger(GRPC_CORE_LOGGER)
    assert sum(type(f).__name__ == "ClientGoneFilter" for f in logger.filters) == 1
    caplog.set_level(logging.INFO, logger=GRPC_CORE_LOGGER)
    status = 'Failed "execute_batch": (<grpc._cython.cygrpc.SendStatusFromServerOperation object at 0x1>,)'
    message = 'Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation object at 0x1>,)'
    for error in (ExecuteBatchError(status), ExecuteBatchError(message), ValueError("ours")):
        try:
            raise error
        except Exception:
            logger.exception("ExecuteBatchError raised in core by servicer method [%s]", "/antiphon.v1.Generation/Chat")
    quiet, *others = caplog.records
    assert (quiet.levelname, quiet.getMessage(), quiet.exc_info) == (
        "INFO",
        "call /antiphon.v1.Generation/Chat: its client went away before its status was sent",
        None,
    )
    assert [(r.levelname, r.exc_info is not None) for r in others] == [("ERROR", True), ("ERROR", True)]
