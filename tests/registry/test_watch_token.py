"""``Registry.watch_token``: stat calls only, and it changes with every alias move, registration, deletion and
route version."""

from __future__ import annotations

import sparkscore as ss
from tests.serving.conftest import glm


def test_token_changes_exactly_when_a_ref_could_resolve_differently(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    reg.register("m", glm(1))
    reg.register("m", glm(2))
    reg.set_alias("m", "prod", 1)
    tokens = [reg.watch_token(["m"])]
    assert reg.watch_token(["m"]) == tokens[-1]            # nothing changed: same token
    reg.get("m@prod"), reg.load("m/1"), reg.aliases("m")   # reads change nothing
    assert reg.watch_token(["m"]) == tokens[-1]
    for change in (lambda: reg.set_alias("m", "prod", 2),  # alias moved (same size, same second)
                   lambda: reg.set_alias("m", "prod", 1),  # and back
                   lambda: reg.set_alias("m", "dev", 2),   # new alias
                   lambda: reg.register("m", glm(3)),      # new latest
                   lambda: reg.delete("m", 3),              # latest removed
                   lambda: reg.set_route("m", "ab", {1: 100}, key="id"),  # a new route
                   lambda: reg.set_route("m", "ab", {1: 50, 2: 50})):      # its next version (a bandit update)
        change()
        token = reg.watch_token(["m"])
        assert token not in tokens
        tokens.append(token)
    every = reg.watch_token()
    reg.register("other", glm(4))                          # a new name shows in the all-names token
    assert reg.watch_token() != every and reg.watch_token(["m"]) == tokens[-1]
