"""Web plumbing shared by every context's JSON and HTML routers."""

from allot.kernel.web.templating import is_htmx, render
from allot.kernel.web.uow import ReadSession, UnitOfWorkRoute, WriteSession

__all__ = ["ReadSession", "UnitOfWorkRoute", "WriteSession", "is_htmx", "render"]
