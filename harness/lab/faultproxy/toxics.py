"""Toxics as data: Toxiproxy's toxic types, their attributes, JSON parsing/validation and pure math."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import INVALID_STREAM, INVALID_TOXIC_TYPE, bad_body

UPSTREAM = "upstream"
"""Data from the client to the upstream server."""
DOWNSTREAM = "downstream"
"""Data from the upstream server back to the client (Toxiproxy's default stream)."""
STREAMS = (UPSTREAM, DOWNSTREAM)

# Every toxic type with its attributes and their defaults (all integers, as in Toxiproxy):
#   latency     latency, jitter (ms)       each chunk is delayed by latency +/- jitter
#   bandwidth   rate (KB/s, 0 = no limit)  data passes at most at this rate
#   slow_close  delay (ms)                 the close (EOF) is delayed
#   timeout     timeout (ms)               data stops; connection closed after timeout (0 = never,
#                                          data held until the toxic is removed)
#   reset_peer  timeout (ms)               on data, wait timeout then reset the connection (RST)
#   slicer      average_size, size_variation (bytes), delay (us)   data cut into small writes
#   limit_data  bytes                      the connection is closed after this many bytes
TOXIC_ATTRIBUTES: Mapping[str, Mapping[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


@dataclass(frozen=True, eq=False)
class Toxic:
    """One toxic of a proxy. Compared by identity: every create or update makes a new object."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int] = field(default_factory=dict)

    def attr(self, key: str) -> int:
        """The integer value of one attribute."""
        return self.attributes[key]

    def to_json(self) -> dict[str, Any]:
        """The toxic as Toxiproxy serialises it."""
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def _string(body: Mapping[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_body(f"field {key!r} must be a string, got {value!r}")
    return value


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body(f"field 'toxicity' must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0 or math.isnan(value):
        raise bad_body(f"toxicity must be between 0 and 1, got {value!r}")
    return float(value)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body(f"attribute {key!r} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise bad_body(f"attribute {key!r} must be an integer, got {value!r}")
        value = int(value)
    if value < 0:
        raise bad_body(f"attribute {key!r} must not be negative, got {value!r}")
    return value


def parse_attributes(
    toxic_type: str, raw: Any, base: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Decode `attributes` over `base` (the defaults, or the current values on update).

    Keys the type does not know are ignored, as Toxiproxy's JSON decoding does.
    """
    schema = TOXIC_ATTRIBUTES[toxic_type]
    values = dict(base if base is not None else schema)
    if raw is None:
        return _validated(toxic_type, values)
    if not isinstance(raw, Mapping):
        raise bad_body(f"field 'attributes' must be an object, got {raw!r}")
    for key, value in raw.items():
        if key in schema:
            values[key] = _integer(key, value)
    return _validated(toxic_type, values)


def _validated(toxic_type: str, values: dict[str, int]) -> dict[str, int]:
    if toxic_type == "slicer":
        if values["average_size"] < 1:
            raise bad_body(f"slicer average_size must be at least 1, got {values['average_size']}")
        if values["size_variation"] >= values["average_size"]:
            raise bad_body(
                "slicer size_variation must be less than average_size, got "
                f"{values['size_variation']} >= {values['average_size']}"
            )
    return values


def parse_toxic(body: Any) -> Toxic:
    """Build a toxic from a `POST /proxies/{proxy}/toxics` body, with Toxiproxy's defaults.

    Checks in Toxiproxy's order: body shape, stream, default name, type, attributes.
    """
    if not isinstance(body, Mapping):
        raise bad_body(f"expected a JSON object, got {type(body).__name__}")
    stream = _string(body, "stream", DOWNSTREAM).lower()
    if stream not in STREAMS:
        raise INVALID_STREAM
    toxic_type = _string(body, "type", "")
    name = _string(body, "name", "") or f"{toxic_type}_{stream}"
    if toxic_type not in TOXIC_ATTRIBUTES:
        raise INVALID_TOXIC_TYPE
    toxicity = _toxicity(body["toxicity"]) if body.get("toxicity") is not None else 1.0
    attributes = parse_attributes(toxic_type, body.get("attributes"))
    return Toxic(name, toxic_type, stream, toxicity, attributes)


def update_toxic(toxic: Toxic, body: Any) -> Toxic:
    """A new toxic from `POST|PATCH .../toxics/{toxic}`: attributes merged over the old ones."""
    if not isinstance(body, Mapping):
        raise bad_body(f"expected a JSON object, got {type(body).__name__}")
    toxicity = toxic.toxicity
    if body.get("toxicity") is not None:
        toxicity = _toxicity(body["toxicity"])
    attributes = parse_attributes(toxic.type, body.get("attributes"), toxic.attributes)
    return Toxic(toxic.name, toxic.type, toxic.stream, toxicity, attributes)


def latency_delay_ms(latency: int, jitter: int, rng: random.Random) -> int:
    """One chunk's delay in ms: latency +/- jitter, uniform as in Toxiproxy (never negative)."""
    delay = latency
    if jitter > 0:
        delay += rng.randrange(jitter * 2) - jitter
    return max(delay, 0)


def slice_offsets(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Cut points `[0, ..., size]` slicing `size` bytes into pieces of about `average` bytes.

    Toxiproxy's slicer: split in about two (+/- variation) until a piece is within
    `average + variation`, so pieces vary evenly and none is empty.
    """
    cuts = [0]
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            cuts.append(end)
            continue
        shift = rng.randrange(variation * 2) - variation if variation > 0 else 0
        mid = start + (end - start) // 2 + shift
        mid = min(max(mid, start + 1), end - 1)
        stack.append((mid, end))
        stack.append((start, mid))
    return cuts
