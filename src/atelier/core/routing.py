"""Where routes live and how a request is named in logs and metrics.

Convention: every router declares its full prefix (`APIRouter(prefix="/api/v1/datasets")`) and
the app includes it without one. FastAPI (0.165) reports the included router's own route in
`scope["route"]`, so a prefix added by `include_router(prefix=...)` would be missing from the
route template; `tests/test_app.py` fails if any route breaks this.
"""

from starlette.routing import Mount
from starlette.types import Scope

API_PREFIX = "/api/v1"
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/jobs/{id}`), bounded for use as a metric label."""
    route = scope.get("route")
    if route is None:
        # FastAPI's router leaves no "route" for a Mount (static files); the mount point is
        # in root_path once the mounted app was chosen as the endpoint.
        if scope.get("endpoint") is not None and scope.get("root_path"):
            return scope["root_path"] + "/{path}"
        return UNMATCHED_ROUTE
    if isinstance(route, Mount):
        return route.path + "/{path}"
    return getattr(route, "path", UNMATCHED_ROUTE)


def operation(resource: str, action: str) -> dict:
    """Route keyword arguments declaring what an operation touches, as OpenAPI extensions:
    `@router.get("/{id}", **operation("dataset", "read"))`. `action="public"` marks an
    operation that needs no credentials. Tests use them to find every tenant route."""
    return {"openapi_extra": {"x-atelier-resource": resource, "x-atelier-action": action}}
