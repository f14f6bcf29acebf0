"""OpenTelemetry set-up, chosen by configuration: WNODES_OTEL_EXPORTER = none | console | otlp | file.

Off ("none") by default, so tests pay nothing. With "otlp" the standard OTEL_EXPORTER_OTLP_*
variables say where spans go; "file" writes one JSON span per line to
$WNODES_OTEL_DIR/<service>-<pid>.jsonl. Interceptors are passed explicitly to servers and channels (no
global monkey-patching), so one request is one trace across gateway, nameserver and agent.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace

_configured = False


def exporter_kind() -> str:
    return os.environ.get("WNODES_OTEL_EXPORTER", "none").lower()


def setup(service_name: str) -> None:
    global _configured
    if _configured or exporter_kind() == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter: SpanExporter
    if exporter_kind() == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif exporter_kind() == "file":
        path = os.path.join(os.environ.get("WNODES_OTEL_DIR", "/tmp"), f"{service_name}-{os.getpid()}.jsonl")
        out = open(path, "a")  # noqa: SIM115 - lives as long as the process
        exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def server_interceptors() -> list[Any]:
    if exporter_kind() == "none":
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    if exporter_kind() == "none":
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
