"""HTTP transports: thin Starlette apps that convert payloads and call the data plane."""
