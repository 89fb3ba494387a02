"""The soak: the hourly pipeline over simulated days under sustained faults, then compared with a
fault-free run of the same days, table by table (see :mod:`entasis.soak.runner`)."""
