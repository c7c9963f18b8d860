"""Regenerate the Python modules for ``deviceplugin.proto`` with grpcio-tools.

The generated ``deviceplugin_pb2.py`` and ``deviceplugin_pb2_grpc.py`` are committed next to the
.proto, so the plugin image needs no protoc. No ``.pyi`` is generated: protoc's stubs do not pass
``mypy --strict`` or ruff, and ``device_plugin.api`` is the typed surface instead. A developer who
edits the .proto runs ``python -m device_plugin.api.codegen``; a unit test in
``tests/unit/device_plugin/test_api.py`` calls :func:`generate` into a temporary directory and
fails when the committed files differ. grpcio-tools is a test dependency, so it is imported
only when this module runs.
"""

import sys
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
# The proto is compiled relative to ``device-plugin/`` so that the generated gRPC module imports
# ``device_plugin.api.deviceplugin_pb2`` as a package-qualified module, not a top-level one.
SOURCE_ROOT = API_DIR.parent.parent
PROTO = API_DIR / "deviceplugin.proto"
GENERATED = ("deviceplugin_pb2.py", "deviceplugin_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile the .proto into ``out_root/device_plugin/api/`` and return the generated files."""
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    # protoc records the proto's path relative to -I ("device_plugin/api/deviceplugin.proto") in
    # the generated code, so the output never depends on the caller's working directory.
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{SOURCE_ROOT}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(PROTO),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc} compiling {PROTO}")
    out_dir = out_root / "device_plugin" / "api"
    return [out_dir / name for name in GENERATED]


def main() -> None:
    """Regenerate the committed modules in place."""
    for path in generate(SOURCE_ROOT):
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
