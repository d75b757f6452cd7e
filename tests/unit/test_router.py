import random
from collections import Counter

import pytest

from sandbox.errors import ConfigError
from sandbox.serving.launch import RouteVariant
from sandbox.serving.router import VariantPicker
from sandbox.serving.specs import VariantSpec, validate_model_uri, validate_name


def _variants(*weights):
    return [RouteVariant(chr(ord("a") + i), "http://127.0.0.1:1", f"m{i}", w) for i, w in enumerate(weights)]


def test_weighted_split_is_close_to_the_weights():
    picker = VariantPicker(_variants(80, 20), rng=random.Random(1))
    counts = Counter(picker.pick().label for _ in range(20000))
    assert abs(counts["a"] / 20000 - 0.8) < 0.01


def test_sticky_keys_always_get_the_same_variant_and_still_split():
    picker = VariantPicker(_variants(50, 50))
    assert len({picker.pick("user-42").label for _ in range(50)}) == 1
    counts = Counter(picker.pick(f"user-{i}").label for i in range(4000))
    assert 0.45 < counts["a"] / 4000 < 0.55


def test_zero_weight_variant_gets_nothing():
    picker = VariantPicker(_variants(1, 0), rng=random.Random(0))
    assert {picker.pick().label for _ in range(1000)} == {"a"}


def test_bad_weights_are_refused():
    with pytest.raises(ValueError):
        VariantPicker(_variants(0, 0))
    with pytest.raises(ValueError):
        VariantPicker([])


def test_router_variant_spec():
    variant = RouteVariant.parse("a=http://127.0.0.1:8001/fraud-a:80")
    assert (variant.label, variant.base_url, variant.model_name, variant.weight) == (
        "a",
        "http://127.0.0.1:8001",
        "fraud-a",
        80.0,
    )


def test_cli_variant_spec_keeps_colons_in_the_uri():
    spec = VariantSpec.parse("champion=models:/fraud-detector@champion:90")
    assert (spec.label, spec.model_uri, spec.weight) == ("champion", "models:/fraud-detector@champion", 90.0)
    for bad in ("a", "a=models:/m/1", "a=models:/m/1:x", "A=models:/m/1:5", "a=models:/m/1:-5"):
        with pytest.raises(ConfigError):
            VariantSpec.parse(bad)


def test_names_and_uris_are_validated():
    validate_name("fraud-detector")
    for bad in ("Fraud", "-x", "a_b", "x" * 50):
        with pytest.raises(ConfigError):
            validate_name(bad)
    for good in ("models:/m/3", "models:/m@champion", "runs:/abc/model"):
        validate_model_uri(good)
    for bad in ("m/3", "models:/", "http://x"):
        with pytest.raises(ConfigError):
            validate_model_uri(bad)
