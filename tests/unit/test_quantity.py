"""Kubernetes quantities → whole GiB: exact parsing, rounding up, minimum 1, refusals naming the field."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from provisioner.domain.errors import InvalidInput
from provisioner.domain.quantity import (
    GIB,
    STORAGE_FIELD,
    gib_quantity,
    parse_quantity,
    quantity_to_gib,
    requested_size_gib,
)


@pytest.mark.parametrize(
    ("text", "gib"),
    [
        ("1Gi", 1),
        ("10Gi", 10),
        ("1073741824", 1),
        ("1073741825", 2),
        ("1G", 1),
        ("2G", 2),
        ("1500M", 2),
        ("1.5Gi", 2),
        ("2048Mi", 2),
        ("2049Mi", 3),
        ("0.5Ti", 512),
        (".5Gi", 1),
        ("1.", 1),
        ("+3Gi", 3),
        ("1e9", 1),
        ("2e9", 2),
        ("1E3", 1),
        ("1e-3", 1),
        ("1E", 931322575),
        ("1Ei", 1 << 30),
        ("1Pi", 1 << 20),
        ("1k", 1),
        ("500m", 1),
        ("1n", 1),
        ("250u", 1),
        ("1048576Ki", 1),
        ("1048577Ki", 2),
    ],
)
def test_quantity_table(text: str, gib: int) -> None:
    """Each suffix form rounds up to the expected whole GiB (minimum 1)."""
    assert gib == quantity_to_gib(text)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1GB", "1gi", "1e", "Gi", "1 Gi", "--1", "1.2.3", "1e1000", "1e-99", "0x10", "1_000", "٣Gi"],
)
def test_malformed_quantities_are_refused(text: str) -> None:
    """Anything outside Kubernetes' grammar (or absurd exponents) raises InvalidInput naming the field."""
    with pytest.raises(InvalidInput) as info:
        quantity_to_gib(text)
    assert STORAGE_FIELD == info.value.field


def test_surrounding_whitespace_is_tolerated() -> None:
    """Hand-written YAML may carry stray spaces around the value."""
    assert 2 == quantity_to_gib(" 2Gi\n")


@pytest.mark.parametrize("text", ["0", "-0", "0.0", "+0", "0Gi", "0e9", "0.000k", ".0Mi"])
def test_zero_is_refused(text: str) -> None:
    """Kubernetes requires a positive request: every spelling of zero is refused, never rounded to 1 GiB."""
    with pytest.raises(InvalidInput) as info:
        quantity_to_gib(text)
    assert (STORAGE_FIELD, "must be greater than zero") == (info.value.field, info.value.message)


def test_long_garbage_is_not_echoed_in_full() -> None:
    """A refused 5,000-character value is shown shortened in the one-line message."""
    with pytest.raises(InvalidInput) as info:
        quantity_to_gib("x" * 5000)
    assert len(str(info.value)) < 200


def test_negative_is_refused() -> None:
    """A negative request is refused, naming the field."""
    with pytest.raises(InvalidInput) as info:
        quantity_to_gib("-1Gi")
    assert STORAGE_FIELD == info.value.field


def test_too_many_digits_is_refused() -> None:
    """Absurdly long numbers are refused instead of hitting Python's int-string limit."""
    with pytest.raises(InvalidInput):
        quantity_to_gib("1" * 5000)


def test_beyond_one_exbibyte_is_refused() -> None:
    """Sizes no Cinder backend can hold are refused."""
    with pytest.raises(InvalidInput):
        quantity_to_gib("2Ei")


def test_field_name_is_configurable() -> None:
    """Callers parsing another field (e.g. a restore size) get that field in the error."""
    with pytest.raises(InvalidInput) as info:
        parse_quantity("x", field="status.restoreSize")
    assert "status.restoreSize" == info.value.field


def test_gib_quantity() -> None:
    """PV capacity is written as '<n>Gi'."""
    assert "7Gi" == gib_quantity(7)


def pvc_with(storage: Any) -> dict[str, Any]:
    return {"spec": {"resources": {"requests": {"storage": storage}}}}


def test_requested_size_from_claim() -> None:
    """The claim's request is read from spec.resources.requests.storage; plain integers are bytes."""
    assert 5 == requested_size_gib(pvc_with("4.5Gi"))
    assert 1 == requested_size_gib(pvc_with(1073741824))


@pytest.mark.parametrize(
    "pvc", [{}, {"spec": None}, {"spec": {"resources": {}}}, pvc_with(None), pvc_with(True)]
)
def test_requested_size_refusals(pvc: dict[str, Any]) -> None:
    """Missing or non-quantity requests name spec.resources.requests.storage."""
    with pytest.raises(InvalidInput) as info:
        requested_size_gib(pvc)
    assert STORAGE_FIELD == info.value.field


@given(st.integers(min_value=1, max_value=1 << 60))
def test_plain_bytes_round_up(n: int) -> None:
    """For any positive byte count the result is the smallest whole GiB that holds it."""
    assert math.ceil(Fraction(n, GIB)) == quantity_to_gib(str(n))


@given(st.integers(min_value=1, max_value=1 << 20), st.sampled_from(["Ki", "Mi", "Gi", "Ti"]))
def test_binary_suffixes_exact(n: int, suffix: str) -> None:
    """n<suffix> is exactly n * 1024^k bytes, rounded up to GiB."""
    factor = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[suffix]
    assert max(1, math.ceil(Fraction(n * factor, GIB))) == quantity_to_gib(f"{n}{suffix}")


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=999),
    st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "e3", "E6", "e-2"]),
)
def test_decimal_forms_never_round_down(whole: int, frac: int, suffix: str) -> None:
    """Decimal numbers with SI suffixes or exponents: size*GiB covers the request, size-1 GiB does not."""
    assume(whole or frac)
    text = f"{whole}.{frac:03d}{suffix}"
    value = parse_quantity(text)
    gib = quantity_to_gib(text)
    assert value <= gib * GIB
    assert gib == 1 or (gib - 1) * GIB < value


@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Any string parses or raises InvalidInput (never ValueError/OverflowError)."""
    try:
        gib: int | InvalidInput = quantity_to_gib(text)
    except InvalidInput as e:
        gib = e
    assert (gib >= 1) if isinstance(gib, int) else (STORAGE_FIELD == gib.field)


#: Kubernetes' own quantity grammar (k8s.io/apimachinery resource.Quantity), written independently.
K8S_QUANTITY = (
    r"[+-]?([0-9]{1,12}(\.[0-9]{0,6})?|\.[0-9]{1,6})([eE][+-]?[0-9]{1,3}|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?"
)


@given(st.from_regex(K8S_QUANTITY, fullmatch=True))
def test_every_kubernetes_quantity_is_sized_or_refused_by_name(text: str) -> None:
    """Any string in Kubernetes' grammar gives a positive GiB covering it, or a refusal naming the field."""
    try:
        outcome: int | InvalidInput = quantity_to_gib(text)
    except InvalidInput as e:
        outcome = e
    if isinstance(outcome, InvalidInput):
        refusals = ("must be greater than zero", "must not be negative", "is larger than 1 EiB")
        assert STORAGE_FIELD == outcome.field
        assert outcome.message in refusals or outcome.message.startswith("exponent")
    else:
        value = parse_quantity(text)
        assert 0 < value <= outcome * GIB
        assert outcome == 1 or (outcome - 1) * GIB < value
