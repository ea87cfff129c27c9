"""Keel: a plugin-based microkernel agent framework.

The kernel defines the contract (:mod:`keel.hookspecs`, the types in :mod:`keel.types`), discovers
plugins through the entry-point group ``keel``, and runs executions. Everything else is a plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.actions import ActionOutcome, ActionRegistry, action, call_action, invoke_action, is_visible
from keel.budget_manager import Budgets
from keel.budgets import Budget, BudgetError, BudgetExceeded, BudgetUsage, ModelPrice, TenantBudget
from keel.compat import CONTRACT_VERSION
from keel.containment import ContainedExecution, ExecutionCrashed
from keel.credentials import Authenticator, AuthError, CredentialSettings, Principal
from keel.environments import EnvironmentManager, EnvironmentState
from keel.errors import (
    ActionDenied,
    ActionError,
    ActionInputError,
    AgentTimeoutError,
    ApprovalRequired,
    ConflictError,
    DriverNotFoundError,
    ExecutionCancelled,
    IncompatiblePluginError,
    KeelError,
    NotFoundError,
    OutputLimitExceeded,
    OutputValidationError,
    PluginConflictError,
    PluginLoadError,
    StackError,
    StoreError,
    ToolLoopLimit,
    UnknownPluginError,
    error_code,
)
from keel.events import EventBus, RuntimeEvent, TraceParent, continuing_trace, current_trace, inline_observer
from keel.execution import EventLog, Execution, ExecutionRegistry, ExecutionStatus, Runnable, RunnableRegistry
from keel.handwritten import BaseExecution
from keel.hookspecs import hookimpl
from keel.options import parse_options, validation_problems
from keel.plugins import PluginHost, PluginInfo
from keel.policy import (
    ApprovalDecision,
    ApprovalRequest,
    Approver,
    CallbackApprover,
    ConsoleApprover,
    load_approver,
)
from keel.refs import lazy_exports, load_ref
from keel.runtime import Runtime
from keel.stack import Stack, StackConfig, load_stack
from keel.store import BlobRef, LogRecord, MemoryStore, Store, Versioned
from keel.types import (
    ActionCall,
    ActionContext,
    ActionSpec,
    Channel,
    ChannelSpec,
    DoctorCheck,
    DoctorResult,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    EvalResult,
    EvalSample,
    EvaluatorSpec,
    Health,
    Interrupt,
    Message,
    Model,
    ModelCapabilities,
    ModelConfig,
    ModelDone,
    ModelEvent,
    ModelRequest,
    ModelSpec,
    Permissions,
    PolicyDecision,
    ProductEvent,
    Progress,
    RestartPolicy,
    Risk,
    SlotSpec,
    StoreSpec,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSchema,
    Usage,
    new_id,
)

if TYPE_CHECKING:
    from keel.agent import Agent, AgentExecution
    from keel.doctor import DoctorContext
    from keel.instant import InstantEvent, InstantParser, OutputLimits
    from keel.output import OutputCheck, OutputContract

#: imported on first use: `keel plugins` and plugin discovery never need the agent machinery
_LAZY = {
    "Agent": "keel.agent",
    "AgentExecution": "keel.agent",
    "DoctorContext": "keel.doctor",
    "InstantEvent": "keel.instant",
    "InstantParser": "keel.instant",
    "OutputLimits": "keel.instant",
    "OutputCheck": "keel.output",
    "OutputContract": "keel.output",
}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), _LAZY)
__all__ = [
    "CONTRACT_VERSION",
    "ActionOutcome",
    "ActionRegistry",
    "call_action",
    "is_visible",
    "EnvironmentManager",
    "EnvironmentState",
    "ApprovalDecision",
    "ApprovalRequest",
    "Approver",
    "CallbackApprover",
    "ConsoleApprover",
    "BaseExecution",
    "ActionCall",
    "ActionContext",
    "ActionDenied",
    "ActionError",
    "ActionInputError",
    "ActionSpec",
    "Agent",
    "AgentExecution",
    "AgentTimeoutError",
    "ApprovalRequired",
    "BlobRef",
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "BudgetUsage",
    "Budgets",
    "Channel",
    "ChannelSpec",
    "ConflictError",
    "DoctorCheck",
    "DoctorContext",
    "DoctorResult",
    "DriverNotFoundError",
    "Environment",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "EvalResult",
    "EvalSample",
    "EvaluatorSpec",
    "EventBus",
    "parse_options",
    "validation_problems",
    "EventLog",
    "AuthError",
    "Authenticator",
    "ContainedExecution",
    "CredentialSettings",
    "Execution",
    "ExecutionCrashed",
    "ExecutionCancelled",
    "ExecutionRegistry",
    "ExecutionStatus",
    "Health",
    "InstantEvent",
    "Interrupt",
    "InstantParser",
    "KeelError",
    "LogRecord",
    "MemoryStore",
    "Message",
    "Model",
    "ModelCapabilities",
    "ModelConfig",
    "ModelDone",
    "ModelEvent",
    "ModelPrice",
    "ModelRequest",
    "ModelSpec",
    "NotFoundError",
    "OutputCheck",
    "OutputContract",
    "OutputLimitExceeded",
    "OutputLimits",
    "OutputValidationError",
    "Permissions",
    "IncompatiblePluginError",
    "PluginConflictError",
    "PluginHost",
    "Principal",
    "PluginInfo",
    "PluginLoadError",
    "PolicyDecision",
    "ProductEvent",
    "Progress",
    "RestartPolicy",
    "Risk",
    "SlotSpec",
    "Runnable",
    "RunnableRegistry",
    "Runtime",
    "RuntimeEvent",
    "TraceParent",
    "Stack",
    "StackConfig",
    "StackError",
    "Store",
    "StoreError",
    "StoreSpec",
    "TenantBudget",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolLoopLimit",
    "ToolSchema",
    "UnknownPluginError",
    "Usage",
    "Versioned",
    "action",
    "hookimpl",
    "inline_observer",
    "invoke_action",
    "lazy_exports",
    "load_approver",
    "load_ref",
    "load_stack",
    "continuing_trace",
    "current_trace",
    "error_code",
    "new_id",
]
