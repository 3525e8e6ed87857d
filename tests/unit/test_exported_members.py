"""The public surface of ``engine`` is exactly what ``__all__`` names."""

from __future__ import annotations

import engine


def test_all_names_exist_and_are_public():
    for name in engine.__all__:
        assert hasattr(engine, name), name
        assert not name.startswith("_")


def test_all_is_exactly_the_public_names():
    public = {
        name
        for name, value in vars(engine).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("engine")
        and not isinstance(value, type(engine))
    }
    assert public == set(engine.__all__)
