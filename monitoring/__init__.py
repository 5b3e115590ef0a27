"""Drift, online quality and alerts.

Evidently, imported by the drift job, imports its UI service, which calls litestar APIs that
litestar deprecates, and carries deprecated numpy imports of its own. Those notices are for
Evidently's and litestar's maintainers, not for a user running `activity demo` or `activity up`
(or with warnings turned on), so they are silenced here, before any monitoring module imports
Evidently.
"""

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(evidently|litestar)(\.|$)")
