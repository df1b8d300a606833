"""Django settings, split by concern; every value comes from the environment (see config/env.py)."""

from .core import *  # noqa: F401,F403
from .database import *  # noqa: F401,F403
from .tasks import *  # noqa: F401,F403
from .providers import *  # noqa: F401,F403
from .gateway import *  # noqa: F401,F403
from .security import *  # noqa: F401,F403
from .logs import *  # noqa: F401,F403
from .quality import *  # noqa: F401,F403
