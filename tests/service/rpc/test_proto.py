"""The generated gRPC code is what scripts/gen_proto.py makes of the .proto files today."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


def test_generated_code_is_up_to_date(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = {p.name: p.read_text() for p in gen.generate(tmp_path)}
    committed = REPO / "service" / "rpc" / "gen"
    for name, text in fresh.items():
        assert (committed / name).read_text() == text, (
            f"service/rpc/gen/{name} is stale: run python scripts/gen_proto.py"
        )
    assert (committed / "__init__.py").exists()


def test_the_package_is_versioned_and_enums_have_an_unspecified_zero():
    from service.rpc.gen import segmentation_pb2 as pb

    assert pb.DESCRIPTOR.package == "isvos.v1"
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED")
