"""The policy engine: model, rules, decisions, CSV import/export, change propagation.

Framework-free: imports casbin and SQLAlchemy, never Flask.
"""

from authz.decision import Decision
from authz.decision import Reason
from authz.engine import Applied
from authz.engine import Change
from authz.engine import PolicyEngine
from authz.errors import AuthzError
from authz.errors import EngineUnavailable
from authz.errors import LockoutRefused
from authz.errors import ModelError
from authz.errors import NotFound
from authz.errors import PolicyFileError
from authz.errors import RequestTooLarge
from authz.errors import RuleError
from authz.errors import StaleRevision
from authz.errors import UnsafePath
from authz.guards import LockoutGuard
from authz.model import PolicyModel
from authz.rules import ANONYMOUS
from authz.rules import Rule
from authz.snapshot import BadRow
from authz.store import AuditEntry
from authz.store import PolicyStore

__all__ = [
    "ANONYMOUS",
    "Applied",
    "AuditEntry",
    "AuthzError",
    "BadRow",
    "Change",
    "Decision",
    "EngineUnavailable",
    "LockoutGuard",
    "LockoutRefused",
    "ModelError",
    "NotFound",
    "PolicyEngine",
    "PolicyFileError",
    "PolicyModel",
    "PolicyStore",
    "Reason",
    "RequestTooLarge",
    "Rule",
    "RuleError",
    "StaleRevision",
    "UnsafePath",
]
