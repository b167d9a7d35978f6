"""The JSON API under /api/v1: policy rows, role assignments, policy tests, users, audit,
decisions, subjects, service tokens, and the OpenAPI document that describes them all.

Importing the resource modules registers their routes on the one blueprint.
"""

from service.api import audit  # noqa: F401 - registers routes
from service.api import decisions  # noqa: F401 - registers routes
from service.api import openapi  # noqa: F401 - registers routes
from service.api import policy  # noqa: F401 - registers routes
from service.api import subjects  # noqa: F401 - registers routes
from service.api import tests  # noqa: F401 - registers routes
from service.api import tokens  # noqa: F401 - registers routes
from service.api import users  # noqa: F401 - registers routes
from service.api.views import bp

__all__ = ["bp"]
