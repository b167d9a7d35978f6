"""authz.model: reading the Casbin model, its request shape, policy types and matchers."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.errors import ModelError
from authz.model import PolicyModel


def test_shipped_model_shape(model: PolicyModel) -> None:
    """The shipped model has request (sub, obj, act), p with an effect and one role type."""
    assert model.request == ("sub", "obj", "act")
    assert model.policies == {"p": ("sub", "obj", "act", "eft")}
    assert model.roles == {"g": 2}


def test_shipped_model_field_functions(model: PolicyModel) -> None:
    """Each policy field is tied to the matcher function that compares it."""
    assert model.field_functions == {"sub": "g", "obj": "keyMatch2", "act": "regexMatch"}


@pytest.mark.parametrize(("ptype", "arity"), [("p", 4), ("g", 2), ("p2", None), ("x", None)])
def test_shipped_model_arity(model: PolicyModel, ptype: str, arity: int | None) -> None:
    """p rows have 4 values, g rows 2, unknown ptypes none."""
    assert model.arity(ptype) == arity


def test_casbin_model_is_fresh_each_time(model: PolicyModel) -> None:
    """casbin_model() builds a new Casbin Model, so snapshots never share one."""
    first, second = model.casbin_model(), model.casbin_model()
    assert first is not second
    assert "p" in first.model and "g" in first.model


@pytest.mark.parametrize(
    ("name", "request_fields", "policies", "roles", "functions"),
    [
        pytest.param(
            "model_keymatch_no_roles.conf",
            ("sub", "obj", "act"),
            {"p": ("sub", "obj", "act")},
            {},
            {"obj": "keyMatch"},
            id="keymatch-no-roles",
        ),
        pytest.param(
            "model_two_role_types.conf",
            ("sub", "obj", "act"),
            {"p": ("sub", "obj", "act", "eft")},
            {"g": 2, "g2": 3},
            {"sub": "g", "obj": "keyMatch2", "act": "regexMatch"},
            id="two-role-types",
        ),
    ],
)
def test_model_variants(
    data_dir: Path,
    name: str,
    request_fields: tuple[str, ...],
    policies: dict[str, tuple[str, ...]],
    roles: dict[str, int],
    functions: dict[str, str],
) -> None:
    """Other models of the same request shape load and describe themselves."""
    variant = PolicyModel.from_file(data_dir / name)
    assert variant.request == request_fields
    assert variant.policies == policies
    assert variant.roles == roles
    assert variant.field_functions == functions


def test_arity_of_a_model_without_roles(data_dir: Path) -> None:
    """Without a role definition, g is an unknown ptype."""
    variant = PolicyModel.from_file(data_dir / "model_keymatch_no_roles.conf")
    assert variant.arity("p") == 3
    assert variant.arity("g") is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("does_not_exist.conf", "cannot read model file", id="missing-file"),
        pytest.param("model_not_a_model.conf", "not a valid Casbin model", id="not-a-model"),
        pytest.param("model_two_field_request.conf", "three fields", id="two-field-request"),
        pytest.param("model_no_matchers.conf", "missing section for 'm'", id="no-matchers"),
    ],
)
def test_unusable_model_files(data_dir: Path, name: str, message: str) -> None:
    """A missing or wrongly shaped model raises ModelError saying why."""
    with pytest.raises(ModelError, match=message):
        PolicyModel.from_file(data_dir / name)


@pytest.mark.parametrize(
    "text", ["", "[request_definition]\n", "[request_definition\nr = sub, obj, act\n"]
)
def test_unusable_model_text(text: str) -> None:
    """Text that is not a complete model raises ModelError, never a bare exception."""
    with pytest.raises(ModelError):
        PolicyModel.from_text(text)
