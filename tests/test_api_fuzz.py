"""Fuzz the HTTP API against its own OpenAPI document (schemathesis): generated requests for
every operation, valid and invalid, over real HTTP to the running server; every answer must be
a documented status matching its schema, and none may be a 5xx.

The document is loaded from `services.api.openapi` when this module is imported (schemathesis'
lazy fixture loader does not work with this pytest), and a test checks that the server serves
exactly that document.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import schemathesis
from api_support import TEST_LIMITS, TOKENS, ApiServer
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from services.api import openapi

# Per operation (and generation mode): 25 keep the whole run near 20 s on 2 cores; more look
# harder (EXCAMERA_FUZZ_EXAMPLES=300 passes in about 70 s).
EXAMPLES = int(os.environ.get("EXCAMERA_FUZZ_EXAMPLES", "25"))

schema = schemathesis.openapi.from_dict(openapi.document(TEST_LIMITS))
AUTH = {"Authorization": f"Bearer {TOKENS['alice']}"}
# Every check but one: a request valid by the schema may still be refused, since what an input
# URL may name is the operator's policy (prefixes, then the addresses its host resolves to),
# which no schema can say; and a random upload is not a video.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def _sent_query(case: Any, base_url: str, query: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The query string `query` puts on the wire for `case`, as requests encodes it."""
    url = case.as_transport_kwargs(base_url=base_url)["url"]
    prepared = requests.Request("GET", url, params=query).prepare()
    return parse_qsl(urlsplit(prepared.url).query, keep_blank_values=True)


def _invalid_on_the_wire(case: Any, base_url: str) -> bool:
    """Whether a case generated as invalid is still invalid as sent. A query parameter the
    schema does not know, whose value is an empty list or a list of objects, is one requests
    leaves out: the request that arrives is a valid one, and a 200 for it is right."""
    if not case.meta or not case.meta.is_negative_at(ParameterLocation.QUERY):
        return True
    query = case.query or {}
    known = {parameter.name for parameter in case.operation.query}
    return _sent_query(case, base_url, query) != _sent_query(
        case, base_url, {name: value for name, value in query.items() if name in known})


def test_the_fuzzed_document_is_the_served_one(api: ApiServer) -> None:
    served = api.request("GET", "/v1/openapi.json", token=None)
    assert served.status_code == 200
    assert served.json() == openapi.document(TEST_LIMITS)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case: Any, api: ApiServer) -> None:
    excluded = list(EXCLUDED)
    if not _invalid_on_the_wire(case, api.url):
        excluded.append(schemathesis.checks.negative_data_rejection)
    case.call_and_validate(base_url=api.url, headers=AUTH, excluded_checks=excluded)
