"""Load shapes for plain Locust: users over time (they live in `sandbox.loadtest.locust_shapes`).

`sandbox loadtest --shape ...` uses `ProfileShape` through Locust's library API.
With plain Locust, add this file to the locustfiles and name the shape in the
environment:

    LOADTEST_SHAPE='ramp:from=0,to=50,over=60s' locust -f loadtests/users.py,loadtests/shapes.py \\
        --host http://127.0.0.1:8080 --headless

Shapes: ramp:from=0,to=100,over=60s[,hold=30s]; step:from=10,by=10,every=10s,steps=5;
spike:base=20,peak=200,at=10s,for=5s[,total=30s]; soak:level=50,for=30m[,rampup=1m].
Levels are users here (Locust is closed loop); the open-loop generator reads the
same shapes as requests per second (`sandbox loadtest --shape ... --open`).
"""

from sandbox.loadtest.locust_shapes import EnvShape, ProfileShape

__all__ = ["EnvShape", "ProfileShape"]
