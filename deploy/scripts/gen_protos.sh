#!/usr/bin/env bash
# Regenerates the Python stubs (messages, gRPC, and .pyi types) next to each .proto under
# protos/wnodes. The vendored google/* protos are include-only: their Python code comes from
# googleapis-common-protos at run time.
set -euo pipefail
cd "$(dirname "$0")/../../protos"
PY=${PYTHON:-../.venv/bin/python}
find wnodes -name '*_pb2*.py*' -delete
mapfile -t files < <(find wnodes -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I . -I third_party \
  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
  --plugin=protoc-gen-mypy="$(dirname "$PY")/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$PY")/protoc-gen-mypy_grpc" \
  "${files[@]}"
for d in $(find wnodes -type d); do [ -f "$d/__init__.py" ] || : > "$d/__init__.py"; done
