"""A live-stream message nested deeper than the interpreter's recursion limit is bad
input (an `error` answer, the connection stays open), never a crash of the handler."""

from __future__ import annotations

import pytest

from brokerx_api.stream.protocol import MAX_CLIENT_MESSAGE_BYTES, ProtocolError, parse_action


def test_a_live_stream_message_nested_too_deep_is_invalid_json() -> None:
    deep = "[" * 5000 + "]" * 5000
    assert len(deep) <= MAX_CLIENT_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as refused:
        parse_action(deep)
    assert refused.value.code == "invalid_json"
