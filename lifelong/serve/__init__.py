"""``lifelong serve``: one learner as an HTTP service, learning durably while it predicts."""

from lifelong.serve.log import LearnLog
from lifelong.serve.service import RequestError, Service, ServiceSettings

__all__ = ["LearnLog", "RequestError", "Service", "ServiceSettings"]
