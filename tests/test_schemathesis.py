"""``lsr serve`` against its own OpenAPI spec, fuzzed by schemathesis (the ``test`` extra).

Requests generated from the spec, valid ones and ones that break it, go to a real server on loopback
(the tiny index and encoder of ``conftest.py``). Every answer must be a documented status with the
documented content type and body schema, never a 5xx, and a request that breaks the schema must be
refused (4xx). Bounded: a fixed number of examples per mode, no deadline (the machine is shared).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="lsr serve needs the serve extra: pip install 'lsr[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs: pip install 'lsr[test]'")
requests = pytest.importorskip("requests")

from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskips)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from plugin.serve_client import ServerProcess  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 60


@pytest.fixture(scope="module")
def server(tiny_index):
    with ServerProcess(tiny_index["index"], tiny_index["encoder"]) as s:
        yield s


@pytest.mark.parametrize(
    ("mode", "checks"),
    [("positive", CHECKS), ("negative", [*CHECKS, negative_data_rejection])],
)
def test_every_answer_conforms_to_the_spec_and_none_is_a_server_error(server, mode, checks):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    strategy = schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    session = requests.Session()
    seen: list[tuple[str, int]] = []

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call_and_validate(base_url=server.url, session=session, checks=checks, timeout=30)
        seen.append((case.path, response.status_code))

    run()
    # Negative cases exist only where there is input to break: the /search body.
    assert "/search" in {path for path, _ in seen}
    if mode == "negative":
        assert all(400 <= status < 500 for path, status in seen if path == "/search")
    assert not any(status >= 500 for _, status in seen)
    assert "Traceback" not in server.log_tail(200_000)
