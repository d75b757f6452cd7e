"""Locust users for KServe inference endpoints, for plain Locust (they live in `sandbox.loadtest.users`).

For people with Locust habits:

    LOADTEST_MODEL=fraud LOADTEST_WIDTH=8 locust -f loadtests/users.py --host http://127.0.0.1:8080

runs `InferenceUser` (the only concrete class here) with random rows of
LOADTEST_WIDTH features against LOADTEST_MODEL, over LOADTEST_PROTOCOL (v1,
the default, or v2), with the sandbox's serving token when ML_SANDBOX_SERVING_TOKEN
is set (`eval "$(sandbox env)"` sets it). Add `loadtests/shapes.py` to the `-f` list for a ramp,
step, spike or soak shape (see that file). Subclass `V1User`, `V2User`,
`ABUser` or `MLflowServeUser` (set `abstract = False`, `model_name`, `rows`)
for a user of your own; `sandbox loadtest` makes such a subclass itself.
"""

from sandbox.loadtest.users import ABUser, InferenceUser, MLflowServeUser, V1User, V2User

__all__ = ["ABUser", "InferenceUser", "MLflowServeUser", "V1User", "V2User"]
