"""forget → verify: exact unlearning, its receipts and audit log, and the proof."""

from .forget import forget, repair
from .groups import forget_groups
from .receipts import history
from .verify import ShardCheck, VerifyReport, verify

__all__ = ["ShardCheck", "VerifyReport", "forget", "forget_groups", "history", "repair", "verify"]
