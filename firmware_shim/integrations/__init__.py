"""CPython-only integrations, kept apart from the portable core: import the one you use.

    from firmware_shim.integrations.ocpp_guard import guard_charge_point
    from firmware_shim.integrations.http_guard import http_guard
"""

__all__: list[str] = []
