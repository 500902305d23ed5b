"""The committed stubs are what regen_proto.sh generates from the proto."""

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]


def test_committed_stubs_are_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    if not (HERE.parent / "proto/carto/v1/carto.proto").exists():
        pytest.skip("not in the workspace")
    subprocess.run(["bash", str(HERE / "regen_proto.sh"), str(tmp_path)], check=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    for name in ("carto_pb2.py", "carto_pb2_grpc.py", "carto_pb2.pyi"):
        assert (tmp_path / name).read_text() == (HERE / "carto/_proto" / name).read_text(), f"{name}: run python/regen_proto.sh"


def test_stubs_import_inside_the_package():
    from carto._proto import carto_pb2, carto_pb2_grpc

    assert carto_pb2.JobSpec(trainer="external", num_classes=3).num_classes == 3
    assert hasattr(carto_pb2_grpc.WorkerServiceStub, "__init__")
    assert "JoinExternal" in carto_pb2.DESCRIPTOR.services_by_name["WorkerService"].methods_by_name
