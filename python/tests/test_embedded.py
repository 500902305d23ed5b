import os
import stat

import grpc
import pytest

from carto._client import Client
from carto._embedded import EmbeddedCoordinator, find_binary
from carto._proto import carto_pb2 as pb
from carto.errors import CartoBinaryNotFound


def test_carto_serve_starts_with_a_private_token_and_stops(carto_bin):
    e = EmbeddedCoordinator(carto_bin)
    url = e.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        mode = stat.S_IMODE(os.stat(e.token_file).st_mode)
        assert mode == 0o600
        assert len(e.token) == 64
        # Calls need the token.
        c = Client(url, e.token)
        c.call("ListJobs", c.jobs.ListJobs, pb.ListJobsRequest())
        c.close()
        anon = Client(url, None)
        with pytest.raises(Exception, match="UNAUTHENTICATED"):
            anon.call("ListJobs", anon.jobs.ListJobs, pb.ListJobsRequest())
        anon.close()
        pid = e.proc.pid
    finally:
        e.stop()
    assert e.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not e.dir.exists()
    e.stop()  # idempotent


def test_the_binary_comes_from_carto_bin_or_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CARTO_BIN", str(tmp_path / "nope"))
    with pytest.raises(CartoBinaryNotFound, match="CARTO_BIN"):
        find_binary()
    monkeypatch.delenv("CARTO_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CartoBinaryNotFound, match="CARTO_BIN.*PATH"):
        find_binary()


def test_a_binary_that_does_not_serve_is_a_clear_error(tmp_path):
    fake = tmp_path / "carto"
    fake.write_text("#!/bin/sh\necho 'carto: no such thing' >&2\nexit 2\n")
    fake.chmod(0o755)
    e = EmbeddedCoordinator(str(fake))
    with pytest.raises(Exception, match="did not start serving: carto: no such thing"):
        e.start()
    assert not e.dir.exists()
